//! Checkpoint files: named tensors plus a [`ModelMeta`] JSON in the safetensors `__metadata__`,
//! written atomically so a crash never leaves a half-written model behind.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{CheckpointError, Error, Mismatch, Result};

/// Key under which [`ModelMeta`] is stored in the safetensors `__metadata__` map.
const META_KEY: &str = "binann";

/// Checkpoint mode of a frozen backbone plus a small [`crate::Head`] on its embeddings.
pub const MODE_HEAD: &str = "head";
/// Checkpoint mode of a whole network trained end to end ([`crate::FinetuneModel`]).
pub const MODE_FINETUNE: &str = "finetune";

/// What a checkpoint was trained with and on; stored as JSON inside the checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Backbone architecture name, e.g. [`crate::BACKBONE_NAME`].
    pub backbone: String,
    /// Square input side in pixels that the embeddings were computed at.
    pub input_size: u32,
    /// [`MODE_HEAD`] or [`MODE_FINETUNE`].
    pub mode: String,
    /// Monotonic training generation, so consumers can tell newer models apart.
    pub generation: u64,
    /// Number of labelled examples used for training.
    pub labels_used: u64,
    /// How many of those were positives.
    pub positives: u64,
    /// Final training loss. serde_json writes a NaN or infinite loss as `null`, which reads back
    /// as NaN: a diverged model still leaves a readable checkpoint.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Refuses a checkpoint whose backbone or input size differs from what the caller will feed it
/// ([`Error::Incompatible`]).
///
/// Embeddings from another backbone or resolution live in a different space, so a head trained
/// on them would silently produce garbage.
pub fn check_compatible(meta: &ModelMeta, backbone: &str, input_size: u32) -> Result<()> {
    mismatch(meta, backbone, input_size).map_or(Ok(()), |m| Err(Error::Incompatible(m)))
}

/// How `meta` differs from the backbone and input size in use, if it does.
pub(crate) fn mismatch(meta: &ModelMeta, backbone: &str, input_size: u32) -> Option<Mismatch> {
    if meta.backbone != backbone {
        return Some(Mismatch::Backbone { trained: meta.backbone.clone(), in_use: backbone.to_owned() });
    }
    if meta.input_size != input_size {
        return Some(Mismatch::InputSize { trained: meta.input_size, in_use: input_size });
    }
    None
}

/// A float that serde_json may have written as `null` (it has no NaN or infinity).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(deserializer)?.unwrap_or(f32::NAN))
}

/// Saves named tensors and `meta` as a safetensors checkpoint at `path`, atomically.
pub(crate) fn write_checkpoint(path: &Path, tensors: &[(String, Tensor)], meta: &ModelMeta) -> Result<()> {
    let host: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            let shape = t.size().iter().map(|&d| d as usize).collect();
            let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
            Ok((name.clone(), shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        })
        .collect::<Result<_>>()?;
    let serialize_error = |source| Error::Serialize { path: path.to_owned(), source };
    let views = host
        .iter()
        .map(|(name, shape, data)| safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.as_str(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(serialize_error)?;
    // Strings and plain numbers: serde_json has nothing to refuse (a NaN loss becomes null).
    let meta_json = serde_json::to_string(meta).expect("ModelMeta serialises to JSON");
    let metadata = HashMap::from([(META_KEY.to_string(), meta_json)]);
    let bytes = safetensors::tensor::serialize(views, Some(metadata)).map_err(serialize_error)?;
    // The run directory's one atomic write: its temp files are the kind start-up clears away.
    Ok(binann_core::atomic::write_atomic(path, &bytes)?)
}

/// The [`ModelMeta`] stored in a checkpoint's safetensors header.
fn meta_of(bytes: &[u8]) -> Result<ModelMeta, CheckpointError> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(CheckpointError::NotSafetensors)?;
    let meta_json = header.metadata().as_ref().and_then(|m| m.get(META_KEY)).ok_or(CheckpointError::NotBinann)?;
    serde_json::from_str(meta_json).map_err(CheckpointError::BadMeta)
}

/// Reads only the metadata of a checkpoint (e.g. to continue its generation count).
pub fn read_meta(path: &Path) -> Result<ModelMeta> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    meta_of(&bytes).map_err(|e| Error::checkpoint(path, e))
}

/// Parses a checkpoint's bytes as [`write_checkpoint`] writes them: its tensors (on `device`)
/// and meta. Every tensor is checked before any is made, so a corrupt file costs no allocation
/// beyond its own bytes.
pub(crate) fn parse_checkpoint(bytes: &[u8], device: Device) -> Result<(HashMap<String, Tensor>, ModelMeta), CheckpointError> {
    let meta = meta_of(bytes)?;
    let file = SafeTensors::deserialize(bytes).map_err(CheckpointError::NotSafetensors)?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointError::Dtype { name, dtype: format!("{:?}", view.dtype()) });
        }
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = match Tensor::f_from_data_size(view.data(), &shape, Kind::Float) {
            Ok(tensor) => tensor.to_device(device),
            Err(source) => return Err(CheckpointError::Tensor { name, source }),
        };
        tensors.insert(name, tensor);
    }
    Ok((tensors, meta))
}

/// Reads a checkpoint written by [`write_checkpoint`]: its tensors (on `device`) and meta.
pub(crate) fn read_checkpoint(path: &Path, device: Device) -> Result<(HashMap<String, Tensor>, ModelMeta)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_checkpoint(&bytes, device).map_err(|e| Error::checkpoint(path, e))
}

/// Refuses a checkpoint of the other mode, or one trained for other inputs.
pub(crate) fn require(path: &Path, meta: &ModelMeta, mode: &'static str, compatible_with: Option<(&str, u32)>) -> Result<()> {
    if meta.mode != mode {
        return Err(Error::checkpoint(path, CheckpointError::WrongMode { found: meta.mode.clone(), expected: mode }));
    }
    match compatible_with.and_then(|(backbone, size)| mismatch(meta, backbone, size)) {
        Some(m) => Err(Error::checkpoint(path, m)),
        None => Ok(()),
    }
}

/// Refuses to save a model under a meta that does not describe it: `wanted` lists (field,
/// value in the meta, value the model needs).
pub(crate) fn require_meta(path: &Path, wanted: &[(&'static str, String, String)]) -> Result<()> {
    match wanted.iter().find(|(_, in_meta, in_model)| in_meta != in_model) {
        Some((field, in_meta, in_model)) => {
            Err(Error::MetaMismatch { path: path.to_owned(), field, in_meta: in_meta.clone(), in_model: in_model.clone() })
        }
        None => Ok(()),
    }
}

/// Copies checkpoint tensors into the variables of `vs`, requiring an exact name/shape match.
pub(crate) fn fill_var_store(vs: &tch::nn::VarStore, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let mut variables = vs.variables();
    for (name, var) in variables.iter_mut() {
        let src = tensors.get(name).ok_or_else(|| Error::checkpoint(path, CheckpointError::MissingVariable { name: name.clone() }))?;
        if src.size() != var.size() {
            return Err(Error::checkpoint(path, CheckpointError::Shape { name: name.clone(), found: src.size(), expected: var.size() }));
        }
        tch::no_grad(|| var.copy_(src));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn meta(mode: &str) -> ModelMeta {
        ModelMeta {
            backbone: crate::BACKBONE_NAME.into(),
            input_size: 112,
            mode: mode.into(),
            generation: 3,
            labels_used: 10,
            positives: 2,
            loss: 0.25,
            created_ms: 1,
        }
    }

    #[test]
    fn compatibility_requires_same_backbone_and_size() {
        let m = meta(MODE_HEAD);
        check_compatible(&m, crate::BACKBONE_NAME, 112).unwrap();
        let size = check_compatible(&m, crate::BACKBONE_NAME, 224).unwrap_err();
        assert!(matches!(size, Error::Incompatible(Mismatch::InputSize { trained: 112, in_use: 224 })), "{size}");
        let backbone = check_compatible(&m, "resnet18", 112).unwrap_err();
        assert!(
            matches!(&backbone, Error::Incompatible(Mismatch::Backbone { trained, in_use }) if trained == crate::BACKBONE_NAME && in_use == "resnet18"),
            "{backbone}"
        );
    }

    #[test]
    fn checkpoint_round_trip_keeps_tensors_and_meta() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = Tensor::from_slice(&[1f32, -2.5, 3.25, 4.0]).view([2, 2]);
        write_checkpoint(&path, &[("w".into(), t.shallow_clone())], &meta(MODE_HEAD)).unwrap();
        let (tensors, read_meta) = read_checkpoint(&path, Device::Cpu).unwrap();
        assert_eq!(read_meta, meta(MODE_HEAD));
        assert!(tensors["w"].equal(&t));
        // No temp file is left next to the checkpoint.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn foreign_safetensors_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.safetensors");
        Tensor::write_safetensors(&[("w", Tensor::zeros([2], (Kind::Float, Device::Cpu)))], &path).unwrap();
        let err = read_checkpoint(&path, Device::Cpu).unwrap_err();
        assert!(matches!(&err, Error::Checkpoint { path: p, source: CheckpointError::NotBinann } if *p == path), "{err}");
        assert!(err.to_string().contains("plain.safetensors"), "{err}");
    }

    #[test]
    fn missing_checkpoint_is_an_io_error_naming_it() {
        let path = Path::new("/nonexistent/checkpoint.safetensors");
        let err = read_meta(path).unwrap_err();
        assert!(matches!(&err, Error::Io { path: p, source } if p == path && source.kind() == std::io::ErrorKind::NotFound), "{err}");
    }

    #[test]
    fn a_diverged_model_leaves_a_readable_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.safetensors");
        let nan_meta = ModelMeta { loss: f32::NAN, ..meta(MODE_HEAD) };
        write_checkpoint(&path, &[("w".into(), Tensor::from_slice(&[1f32]))], &nan_meta).unwrap();
        let read = read_meta(&path).unwrap();
        assert!(read.loss.is_nan());
        assert_eq!(ModelMeta { loss: 0.0, ..read }, ModelMeta { loss: 0.0, ..nan_meta });
    }

    /// A checkpoint as [`write_checkpoint`] writes it, in memory: its bytes, and the offset where
    /// the tensor data starts (after the 8-byte header length and the JSON header).
    fn checkpoint_bytes(tensors: &[(String, Tensor)], meta: &ModelMeta) -> (Vec<u8>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        write_checkpoint(&path, tensors, meta).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        (bytes, 8 + header_len)
    }

    /// Two small tensors, 10 elements in all.
    fn small_checkpoint() -> (Vec<u8>, usize) {
        let a = Tensor::from_slice(&[1f32, -2.5, 3.25, 4.0, 0.0, 7.5]).view([2, 3]);
        let b = Tensor::from_slice(&[0.5f32, 1e-3, -9.0, 1e9]);
        checkpoint_bytes(&[("a.weight".into(), a), ("b".into(), b)], &meta(MODE_HEAD))
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap().iter().map(|v| v.to_bits()).collect()
    }

    fn numel(tensors: &HashMap<String, Tensor>) -> i64 {
        tensors.values().map(|t| t.size().iter().product::<i64>()).sum()
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn arb_meta() -> impl Strategy<Value = ModelMeta> {
            // any::<f32>() leaves out NaN and the infinities, which a diverged training produces.
            let loss = prop_oneof![any::<f32>(), Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)];
            (".{0,12}", any::<u32>(), ".{0,8}", any::<u64>(), any::<u64>(), any::<u64>(), loss, any::<u64>()).prop_map(
                |(backbone, input_size, mode, generation, labels_used, positives, loss, created_ms)| ModelMeta {
                    backbone,
                    input_size,
                    mode,
                    generation,
                    labels_used,
                    positives,
                    loss,
                    created_ms,
                },
            )
        }

        /// Up to four uniquely named f32 tensors of up to 3 dimensions (some empty), any bits
        /// (NaNs with payloads included).
        fn arb_tensors() -> impl Strategy<Value = Vec<(String, Vec<i64>, Vec<f32>)>> {
            let tensor = prop::collection::vec(0i64..4, 0..=3).prop_flat_map(|shape| {
                let n = shape.iter().product::<i64>() as usize;
                (Just(shape), prop::collection::vec(any::<u32>().prop_map(f32::from_bits), n))
            });
            prop::collection::btree_map("[a-z][a-z0-9._]{0,10}", tensor, 0..4)
                .prop_map(|m| m.into_iter().map(|(name, (shape, values))| (name, shape, values)).collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn valid_checkpoints_round_trip(tensors in arb_tensors(), meta in arb_meta()) {
                let named: Vec<(String, Tensor)> =
                    tensors.iter().map(|(name, shape, values)| (name.clone(), Tensor::from_slice(values).view(shape.as_slice()))).collect();
                let (bytes, _) = checkpoint_bytes(&named, &meta);
                let (read, read_meta) = parse_checkpoint(&bytes, Device::Cpu).unwrap();
                prop_assert_eq!(read.len(), tensors.len());
                for (name, shape, values) in &tensors {
                    prop_assert_eq!(&read[name].size(), shape);
                    let expected: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
                    prop_assert_eq!(bits(&read[name]), expected, "{}", name);
                }
                if meta.loss.is_finite() {
                    prop_assert_eq!(read_meta, meta);
                } else {
                    prop_assert!(read_meta.loss.is_nan());
                    prop_assert_eq!(ModelMeta { loss: 0.0, ..read_meta }, ModelMeta { loss: 0.0, ..meta });
                }
            }

            #[test]
            fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let err = parse_checkpoint(&bytes, Device::Cpu).unwrap_err();
                prop_assert!(matches!(err, CheckpointError::NotSafetensors(_)), "{}", err);
            }

            #[test]
            fn arbitrary_bytes_behind_a_plausible_length_are_refused(
                header in prop::collection::vec(any::<u8>(), 0..256),
                tail in prop::collection::vec(any::<u8>(), 0..64),
            ) {
                // The length prefix matches, so the parser gets as far as the header's JSON.
                let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
                bytes.extend(&header);
                bytes.extend(&tail);
                prop_assert!(parse_checkpoint(&bytes, Device::Cpu).is_err());
            }

            #[test]
            fn every_truncation_is_refused(cut in 0usize..10_000) {
                let (bytes, _) = small_checkpoint();
                let cut = cut % bytes.len();
                let err = parse_checkpoint(&bytes[..cut], Device::Cpu).unwrap_err();
                prop_assert!(matches!(err, CheckpointError::NotSafetensors(_)), "cut at {}: {}", cut, err);
            }

            #[test]
            fn a_flipped_bit_in_the_header_length_is_refused(bit in 0usize..64) {
                let (mut bytes, _) = small_checkpoint();
                bytes[bit / 8] ^= 1 << (bit % 8);
                let err = parse_checkpoint(&bytes, Device::Cpu).unwrap_err();
                prop_assert!(matches!(err, CheckpointError::NotSafetensors(_)), "bit {}: {}", bit, err);
            }

            #[test]
            fn a_flipped_bit_in_the_json_header_is_refused_or_keeps_the_tensor_layout(bit in 64usize..100_000) {
                let (mut bytes, data_start) = small_checkpoint();
                let bit = 64 + (bit - 64) % ((data_start - 8) * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
                // safetensors checks that the offsets tile the data exactly and that each tensor's
                // shape fills its bytes, so what still parses holds the same number of elements.
                if let Ok((tensors, _)) = parse_checkpoint(&bytes, Device::Cpu) {
                    prop_assert_eq!(numel(&tensors), 10);
                }
            }

            #[test]
            fn a_flipped_bit_in_the_data_changes_that_bit_only(bit in 0usize..320) {
                // Safetensors has no checksum: a flip in the data cannot be detected, but it must
                // stay where it is and leave the structure alone.
                let (bytes, data_start) = small_checkpoint();
                let (clean, _) = parse_checkpoint(&bytes, Device::Cpu).unwrap();
                let mut flipped = bytes.clone();
                flipped[data_start + bit / 8] ^= 1 << (bit % 8);
                let (read, read_meta) = parse_checkpoint(&flipped, Device::Cpu).unwrap();
                prop_assert_eq!(read_meta, meta(MODE_HEAD));
                let mut differing = 0;
                for (name, t) in &clean {
                    prop_assert_eq!(read[name].size(), t.size());
                    differing += bits(&read[name]).iter().zip(bits(t)).map(|(a, b)| (a ^ b).count_ones()).sum::<u32>();
                }
                prop_assert_eq!(differing, 1);
            }
        }
    }
}
