//! Every file kind binann writes reads back, at the shapes real folders give it: 1 to 1,000,000
//! entries, names of 1 to 255 bytes, non-ASCII names, empty fields. (A decode limit sized from the
//! payload's bytes once refused manifests of a few thousand short names; the old property test
//! stopped at 300 bytes and never saw it.)

use binann_core::annotations::{Event, Label, Record};
use binann_core::codec::{self, DecodeError, FileKind, MAX_CLAIM_PER_BYTE};
use binann_core::embeddings::EmbeddingChunk;
use binann_core::journal;
use binann_core::manifest::Manifest;
use binann_core::predictions::{ModelInfo, Predictions};
use binann_core::ranking::Ranking;
use proptest::prelude::*;
use serde::{Serialize, de::DeserializeOwned};

/// The size and make-up of one generated value; the values themselves are built from it, so that
/// a million entries cost no shrinking and a failure prints a small, readable case.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Entries (images, ids, records).
    count: usize,
    /// Bytes per name (1..=255); names are cut at a character boundary, so may be a little shorter.
    name_bytes: usize,
    /// Which characters names are made of: 0 ASCII digits, 1 two-byte, 2 three-byte, 3 four-byte, 4 mixed.
    alphabet: u8,
    /// Strings and optional fields empty or absent where the type allows it.
    empty_fields: bool,
    /// Ids and numbers small (one-byte varints: the largest claim per encoded byte) or large.
    small_numbers: bool,
}

/// Entries from 1 to 1,000,000, spread evenly over the orders of magnitude. The product of entries
/// and name bytes is capped at 64 MiB per value so that a debug-build run stays in seconds.
fn shape() -> impl Strategy<Value = Shape> {
    (0u32..=600, 1usize..=255, 0u8..=4, any::<bool>(), any::<bool>()).prop_map(
        |(exp, name_bytes, alphabet, empty_fields, small_numbers)| {
            let count = (10f64.powf(f64::from(exp) / 100.0).round() as usize).clamp(1, 1_000_000);
            let name_bytes = name_bytes.min((64 << 20) / count).max(1);
            Shape { count, name_bytes, alphabet, empty_fields, small_numbers }
        },
    )
}

fn name(shape: &Shape, i: usize) -> String {
    const PIECES: [&[&str]; 5] = [&["0"], &["é", "ß"], &["日", "本"], &["🦀", "𝄞"], &["a", "é", "日", "🦀", "/", " ", ","]];
    let pieces = PIECES[usize::from(shape.alphabet)];
    // A distinct prefix keeps names apart; then padding up to the wanted length.
    let mut s = format!("{i}");
    s.truncate(shape.name_bytes);
    let mut k = i;
    while s.len() < shape.name_bytes {
        let piece = pieces[k % pieces.len()];
        if s.len() + piece.len() > shape.name_bytes {
            break;
        }
        s.push_str(piece);
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    s
}

fn id(shape: &Shape, i: usize) -> u32 {
    if shape.small_numbers { (i % 200) as u32 } else { u32::MAX - i as u32 }
}

fn text(shape: &Shape, what: &str) -> String {
    if shape.empty_fields { String::new() } else { format!("{what}-{}", name(shape, 7)) }
}

fn model_info(shape: &Shape) -> ModelInfo {
    let n = if shape.small_numbers { 1 } else { u64::MAX - 1 };
    ModelInfo {
        checkpoint_generation: n,
        checkpoint_ms: n,
        labels_used: n,
        positives_used: n,
        mode: text(shape, "head"),
        backbone: text(shape, "mobilenet_v2"),
        input_size: if shape.small_numbers { 0 } else { u32::MAX },
        loss: 0.25,
    }
}

fn prob(i: usize) -> f32 {
    if i.is_multiple_of(5) { f32::NAN } else { (i % 1000) as f32 / 1000.0 }
}

fn failed(shape: &Shape) -> Vec<(u32, String)> {
    // With empty fields: every image failed with an empty reason (the most claim per byte).
    if shape.empty_fields { (0..shape.count).map(|i| (id(shape, i), String::new())).collect() } else { vec![(1, name(shape, 1))] }
}

/// Encodes `value` as a file of `kind`, decodes it, and checks that it encodes to the same bytes
/// again (bytes, not `==`, so NaN probabilities compare as the same value).
fn assert_round_trip<T: Serialize + DeserializeOwned>(kind: FileKind, value: &T) -> Result<(), TestCaseError> {
    let bytes = codec::encode_file(kind, 3, value);
    let decoded: Result<(_, T), DecodeError> = codec::decode_file(&bytes, kind);
    let (header, back) = decoded.map_err(|e| TestCaseError::fail(format!("{kind} of {} bytes does not decode: {e}", bytes.len())))?;
    prop_assert_eq!(header.generation, 3);
    prop_assert!(codec::encode_file(kind, 3, &back) == bytes, "{} changed in a round trip", kind);
    Ok(())
}

/// Every kind of file, built at `shape`. The match has no wildcard: a new kind does not compile
/// until it is generated here too.
fn check_kind(kind: FileKind, shape: &Shape) -> Result<(), TestCaseError> {
    let n = shape.count;
    match kind {
        FileKind::Manifest => {
            let m = Manifest { datadir: text(shape, "/data"), paths: (0..n).map(|i| name(shape, i)).collect(), scanned_ms: 1 };
            assert_round_trip(kind, &m)
        }
        FileKind::Ranking => {
            let r = Ranking {
                ids: (0..n).map(|i| id(shape, i)).collect(),
                probs: (0..n).map(prob).collect(),
                selector: text(shape, "max-probability"),
                model: (!shape.empty_fields).then(|| model_info(shape)),
                predicted: n as u64,
                created_ms: 0,
            };
            assert_round_trip(kind, &r)
        }
        FileKind::Predictions => {
            let p = Predictions {
                model: model_info(shape),
                shard: (0, 1),
                ids: (0..n).map(|i| id(shape, i)).collect(),
                logits: (0..n).map(prob).collect(),
                failed: failed(shape),
                created_ms: 0,
            };
            assert_round_trip(kind, &p)
        }
        FileKind::Embeddings => {
            let dim = if shape.empty_fields { 0 } else { 4 };
            let c = EmbeddingChunk {
                ids: (0..n).map(|i| id(shape, i)).collect(),
                dim,
                model: text(shape, "mobilenet_v2@96"),
                values: vec![7; n * dim as usize],
                failed: failed(shape),
            };
            assert_round_trip(kind, &c)
        }
        FileKind::Sketches => {
            let rows: Vec<f32> = (0..n * binann_core::sketches::SKETCH_DIM).map(|i| (i % 255) as f32 - 127.0).collect();
            let s =
                binann_core::sketches::Sketches::quantise((0..n).map(|i| id(shape, i)).collect(), &rows, text(shape, "mobilenet_v2@64"));
            assert_round_trip(kind, &s)
        }
        FileKind::JournalMark => {
            let m = binann_core::annotations::JournalMark {
                records: if shape.small_numbers { n as u64 } else { u64::MAX - n as u64 },
                written_ms: if shape.small_numbers { 0 } else { u64::MAX },
            };
            assert_round_trip(kind, &m)
        }
        FileKind::Annotations => {
            // A journal: framed records behind a header, read back as the server and trainer read it.
            let records: Vec<Record> = (0..n)
                .map(|i| Record {
                    audit: None,
                    seq: if shape.small_numbers { (i % 200) as u64 } else { u64::MAX - i as u64 },
                    time_ms: if shape.small_numbers { 0 } else { u64::MAX },
                    client: if shape.empty_fields { String::new() } else { name(shape, i) },
                    annotator: if shape.empty_fields { String::new() } else { name(shape, i + 1) },
                    event: if i % 3 == 2 {
                        Event::Undo { id: id(shape, i), of_seq: i as u64 }
                    } else {
                        Event::Label { id: id(shape, i), label: Label::Positive, prob: (!shape.empty_fields).then_some(0.5) }
                    },
                })
                .collect();
            let header = codec::Header { version: codec::FORMAT_VERSION, kind, generation: 1, payload_len: 0, payload_crc: 0 };
            let mut bytes = codec::encode_header(&header).to_vec();
            for r in &records {
                bytes.extend_from_slice(&journal::frame(r));
            }
            let read = journal::decode_journal::<Record>(&bytes, kind).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(read.damaged_tail, 0, "journal records were cut off as damage");
            prop_assert!(read.records == records, "journal records changed in a round trip");
            Ok(())
        }
    }
}

const ALL_KINDS: [FileKind; 7] = [
    FileKind::Manifest,
    FileKind::Annotations,
    FileKind::Ranking,
    FileKind::Predictions,
    FileKind::Embeddings,
    FileKind::Sketches,
    FileKind::JournalMark,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn every_file_kind_round_trips_at_any_shape(shape in shape()) {
        for kind in ALL_KINDS {
            check_kind(kind, &shape)?;
        }
    }
}

/// Folder sizes that once broke the manifest: 10-character names, where 4,000, 5,000 and 20,000 images
/// made a manifest that did not decode, and the ends of the ranges.
#[test]
fn folder_sizes_that_broke_the_manifest_and_the_extremes_round_trip() {
    let mut shapes = Vec::new();
    for count in [1, 2_000, 3_000, 4_000, 5_000, 6_000, 20_000, 1_000_000] {
        shapes.push(Shape { count, name_bytes: 10, alphabet: 0, empty_fields: false, small_numbers: true });
        shapes.push(Shape { count, name_bytes: 1, alphabet: 0, empty_fields: true, small_numbers: true });
    }
    shapes.push(Shape { count: 100_000, name_bytes: 255, alphabet: 4, empty_fields: false, small_numbers: false });
    for shape in shapes {
        for kind in ALL_KINDS {
            check_kind(kind, &shape).unwrap_or_else(|e| panic!("{kind} at {shape:?}: {e}"));
        }
    }
}

/// The claim bound holds for the type that claims the most per byte (a `u128` of 0 claims 16 bytes
/// for one byte read), and for strings and options.
#[test]
fn the_worst_claim_per_byte_still_decodes() {
    let zeros = vec![0u128; 1_000_000];
    let bytes = codec::encode_value(&zeros);
    assert_eq!(bytes.len(), zeros.len() + 5, "one byte per value, plus the length prefix");
    assert_eq!(MAX_CLAIM_PER_BYTE, std::mem::size_of::<u128>());
    assert_eq!(codec::decode_value::<Vec<u128>>(&bytes).unwrap(), zeros);
    let empties = vec![String::new(); 1_000_000];
    assert_eq!(codec::decode_value::<Vec<String>>(&codec::encode_value(&empties)).unwrap(), empties);
    let nones: Vec<Option<u64>> = (0..1_000_000).map(|i| (i % 2 == 0).then_some(0)).collect();
    assert_eq!(codec::decode_value::<Vec<Option<u64>>>(&codec::encode_value(&nones)).unwrap(), nones);
}

/// A forged length prefix (checksummed, so it reaches the decoder) is an error, not an abort or an
/// allocation of the size it claims.
#[test]
fn a_forged_length_prefix_is_a_clear_error() {
    let m = Manifest { datadir: "/data".into(), paths: std::iter::repeat_n("a.png", 1000).collect(), scanned_ms: 1 };
    let mut payload = codec::encode_value(&m);
    // The datadir string's length is the first byte; make it a u64 varint of 2^62 (0xfd marker).
    let mut forged = vec![0xfd];
    forged.extend_from_slice(&(1u64 << 62).to_le_bytes());
    payload.splice(0..1, forged);
    let header = codec::Header {
        version: codec::FORMAT_VERSION,
        kind: FileKind::Manifest,
        generation: 1,
        payload_len: payload.len() as u64,
        payload_crc: crc32fast::hash(&payload),
    };
    let mut bytes = codec::encode_header(&header).to_vec();
    bytes.extend_from_slice(&payload);
    match codec::decode_file::<Manifest>(&bytes, FileKind::Manifest) {
        Err(DecodeError::Payload(message)) => assert!(message.contains("Limit"), "{message}"),
        other => panic!("expected a payload error, got {other:?}"),
    }
}
