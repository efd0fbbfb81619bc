//! Renders any run-directory file as JSON: first its header, then its content, one JSON value per
//! line for long lists, so `inspect FILE | head` shows the start of a big file.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::annotations::Record;
use crate::codec::RunDirFile;
use crate::codec::{self, DecodeError, FileError, FileKind, HEADER_LEN};
use crate::manifest::Manifest;
use crate::predictions::Predictions;
use crate::ranking::Ranking;

/// Decodes a run-directory file of kind `T` as its readers would, its version included (a file of
/// a version `T` no longer reads would be printed with values that mean something else now).
fn decode<T: RunDirFile>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (header, value) = codec::decode_file(bytes, T::KIND)?;
    T::check_version(&header)?;
    Ok(value)
}

/// Writes a readable JSON rendering of the file at `path` to `out`.
pub fn inspect(path: &Path, out: &mut dyn Write) -> Result<(), InspectError> {
    let bytes = std::fs::read(path).map_err(|e| FileError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "safetensors") {
        return inspect_safetensors(path, &bytes, out);
    }
    let header = codec::decode_header(&bytes, None).map_err(|e| FileError::decode(path, e))?;
    let dec = |e: DecodeError| FileError::decode(path, e);
    writeln!(out, "{}", json!({ "header": header }))?;
    match header.kind {
        FileKind::Manifest => {
            let m: Manifest = decode(&bytes).map_err(dec)?;
            writeln!(out, "{}", json!({ "datadir": m.datadir, "images": m.paths.len(), "scanned_ms": m.scanned_ms }))?;
            for (id, p) in m.paths.iter().enumerate() {
                writeln!(out, "{}", json!({ "id": id, "path": p }))?;
            }
        }
        FileKind::Annotations => {
            let c = crate::journal::decode_journal::<Record>(&bytes, header.kind).map_err(dec)?;
            // The estimate of the positives left needs the number of images: from the manifest
            // beside the journal, when there is one.
            let total = path.parent().and_then(|dir| Manifest::load(&dir.join("manifest.bin")).ok()).map(|(_, m)| m.len() as u64);
            let left = total.and_then(|total| {
                crate::annotations::AnnotationState::replay(&c.records).ok().and_then(|state| state.positives_left(total))
            });
            writeln!(
                out,
                "{}",
                json!({
                    "records": c.records.len(),
                    "damaged_ranges": c.damaged.iter().map(|d| json!({ "offset": d.offset, "bytes": d.len })).collect::<Vec<_>>(),
                    "damaged_tail_bytes": c.damaged_tail,
                    "images": total,
                    "positives_left": left,
                    // In words: "not known yet" until the estimate can guide a decision.
                    "positives_left_summary": left.as_ref().map(|l| l.summary())
                })
            )?;
            for r in &c.records {
                writeln!(out, "{}", serde_json::to_string(r).map_err(std::io::Error::other)?)?;
            }
        }
        FileKind::Ranking => {
            let r: Ranking = decode(&bytes).map_err(dec)?;
            writeln!(
                out,
                "{}",
                json!({ "entries": r.ids.len(), "selector": r.selector, "model": r.model, "predicted": r.predicted, "created_ms": r.created_ms })
            )?;
            for (id, p) in r.ids.iter().zip(&r.probs) {
                writeln!(out, "{}", json!({ "id": id, "prob": if p.is_nan() { None } else { Some(p) } }))?;
            }
        }
        FileKind::Predictions => {
            let p: Predictions = decode(&bytes).map_err(dec)?;
            writeln!(
                out,
                "{}",
                json!({ "entries": p.ids.len(), "shard": p.shard, "model": p.model, "failed": p.failed, "created_ms": p.created_ms })
            )?;
            for (id, logit) in p.ids.iter().zip(&p.logits) {
                writeln!(out, "{}", json!({ "id": id, "logit": logit, "prob": crate::predictions::probability(*logit) }))?;
            }
        }
        FileKind::Embeddings => {
            let e: crate::embeddings::EmbeddingChunk = decode(&bytes).map_err(dec)?;
            writeln!(
                out,
                "{}",
                json!({ "images": e.ids.len(), "dim": e.dim, "model": e.model, "failed": e.failed, "payload_bytes": bytes.len() - HEADER_LEN })
            )?;
            let values = e.floats();
            for (row, id) in e.ids.iter().enumerate() {
                let start = row * e.dim as usize;
                let head: Vec<f32> = values.get(start..start + 4.min(e.dim as usize)).unwrap_or_default().to_vec();
                writeln!(out, "{}", json!({ "id": id, "first_values": head }))?;
            }
        }
        FileKind::JournalMark => {
            let m: crate::annotations::JournalMark = decode(&bytes).map_err(dec)?;
            writeln!(out, "{}", json!({ "records": m.records, "written_ms": m.written_ms }))?;
        }
        FileKind::Sketches => {
            let s: crate::sketches::Sketches = decode(&bytes).map_err(dec)?;
            writeln!(out, "{}", json!({ "images": s.ids.len(), "dim": crate::sketches::SKETCH_DIM, "scale": s.scale, "model": s.model }))?;
            for (row, id) in s.ids.iter().enumerate() {
                let values: Vec<i8> =
                    s.values.iter().skip(row * crate::sketches::SKETCH_DIM).take(crate::sketches::SKETCH_DIM).map(|v| *v as i8).collect();
                writeln!(out, "{}", json!({ "id": id, "values": values }))?;
            }
        }
    }
    Ok(())
}

fn inspect_safetensors(path: &Path, bytes: &[u8], out: &mut dyn Write) -> Result<(), InspectError> {
    let bad = |m: String| FileError::decode(path, DecodeError::Payload(m));
    if bytes.len() < 8 {
        return Err(bad("truncated safetensors file".into()).into());
    }
    let n = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")) as usize;
    let Some(header) = bytes.get(8..8usize.saturating_add(n)) else {
        return Err(bad(format!("safetensors header of {n} bytes, file has {}", bytes.len())).into());
    };
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| bad(format!("safetensors header is not JSON: {e}")))?;
    writeln!(out, "{}", serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?)?;
    Ok(())
}

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file is unreadable or malformed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}
