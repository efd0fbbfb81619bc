//! Checkpoint files: named tensors plus a [`ModelMeta`] JSON in the safetensors `__metadata__`,
//! written atomically so a crash never leaves a half-written model behind.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Key under which [`ModelMeta`] is stored in the safetensors `__metadata__` map.
const META_KEY: &str = "binann";

/// Checkpoint mode of a frozen backbone plus a small [`crate::Head`] on its embeddings.
pub const MODE_HEAD: &str = "head";
/// Checkpoint mode of a whole network trained end to end ([`crate::FullModel`]).
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
    /// Final training loss.
    pub loss: f32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Refuses a checkpoint whose backbone or input size differs from what the caller will feed it.
///
/// Embeddings from another backbone or resolution live in a different space, so a head trained
/// on them would silently produce garbage.
pub fn check_compatible(meta: &ModelMeta, backbone: &str, input_size: u32) -> Result<()> {
    ensure!(meta.backbone == backbone, "checkpoint was trained on backbone {:?}, but {backbone:?} is in use", meta.backbone);
    ensure!(meta.input_size == input_size, "checkpoint was trained at input size {} px, but {input_size} px is in use", meta.input_size);
    Ok(())
}

/// Saves named tensors and `meta` as a safetensors checkpoint at `path`, atomically.
pub(crate) fn write_checkpoint(path: &Path, tensors: &[(String, Tensor)], meta: &ModelMeta) -> Result<()> {
    let host: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            let shape = t.size().iter().map(|&d| d as usize).collect();
            let values = Vec::<f32>::try_from(t.flatten(0, -1)).with_context(|| format!("copying tensor {name}"))?;
            Ok((name.clone(), shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        })
        .collect::<Result<_>>()?;
    let views = host
        .iter()
        .map(|(name, shape, data)| safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.as_str(), v)))
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([(META_KEY.to_string(), serde_json::to_string(meta)?)]);
    let bytes = safetensors::tensor::serialize(views, Some(metadata)).with_context(|| format!("serializing {}", path.display()))?;
    // The run directory's one atomic write: its temp files are the kind start-up clears away.
    Ok(binann_core::atomic::write_atomic(path, &bytes)?)
}

/// The [`ModelMeta`] stored in a checkpoint's safetensors header.
fn meta_of(bytes: &[u8]) -> Result<ModelMeta> {
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let meta_json = header.metadata().as_ref().and_then(|m| m.get(META_KEY)).context("no binann metadata: not a binann checkpoint")?;
    serde_json::from_str(meta_json).context("invalid binann metadata")
}

/// Reads only the metadata of a checkpoint (e.g. to continue its generation count).
pub fn read_meta(path: &Path) -> Result<ModelMeta> {
    let bytes = std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    meta_of(&bytes).with_context(|| format!("loading checkpoint {}", path.display()))
}

/// Reads a checkpoint written by [`write_checkpoint`]: its tensors (on `device`) and meta.
pub(crate) fn read_checkpoint(path: &Path, device: Device) -> Result<(HashMap<String, Tensor>, ModelMeta)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let parsed = || -> Result<_> {
        let meta = meta_of(&bytes)?;
        let file = SafeTensors::deserialize(&bytes)?;
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!("tensor {name} has dtype {:?}, expected F32", view.dtype());
            }
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, Kind::Float)?.to_device(device);
            tensors.insert(name, tensor);
        }
        Ok((tensors, meta))
    };
    parsed().with_context(|| format!("loading checkpoint {}", path.display()))
}

/// Copies checkpoint tensors into the variables of `vs`, requiring an exact name/shape match.
pub(crate) fn fill_var_store(vs: &tch::nn::VarStore, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let mut variables = vs.variables();
    for (name, var) in variables.iter_mut() {
        let src = tensors.get(name).with_context(|| format!("checkpoint {} lacks variable {name}", path.display()))?;
        ensure!(
            src.size() == var.size(),
            "checkpoint {}: variable {name} has shape {:?}, expected {:?}",
            path.display(),
            src.size(),
            var.size()
        );
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
        assert!(size.to_string().contains("input size 112"), "{size}");
        let backbone = check_compatible(&m, "resnet18", 112).unwrap_err();
        assert!(backbone.to_string().contains("resnet18"), "{backbone}");
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
        let err = format!("{:#}", read_checkpoint(&path, Device::Cpu).unwrap_err());
        assert!(err.contains("plain.safetensors") && err.contains("not a binann checkpoint"), "{err}");
    }
}
