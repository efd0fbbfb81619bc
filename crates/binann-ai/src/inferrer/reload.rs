//! The run-directory files the inferrer looks at between batches, the manifest and the checkpoint,
//! read again only when they changed.

use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::manifest::Manifest;
use binann_core::watch::FileStamp;
use binann_model::{FinetuneModel, Head};
use tch::Device;

use super::{Inferrer, Model};
use crate::model_args::Mode;

/// The run-directory files the inferrer looks at between batches, as it last read them: an
/// unchanged file is not read again (reading the manifest and the checkpoint before every batch
/// took 4 % of the first pass over 20,000 images).
#[derive(Default)]
pub(super) struct Seen {
    manifest: LastRead,
    checkpoint: LastRead,
}

/// A file's stamp when it was last read, and when that was.
#[derive(Default)]
struct LastRead(Option<(Option<FileStamp>, Instant)>);

impl LastRead {
    /// Whether to read the file, now stamped `stamp`, again: when its stamp changed, and at
    /// least every [`Self::AT_LEAST_EVERY`] (a file system with coarse modification times could
    /// give a new version the inode and size of the last); the read is recorded.
    fn changed(&mut self, stamp: Option<FileStamp>) -> bool {
        let now = Instant::now();
        let fresh = self.0.is_some_and(|(seen, at)| seen == stamp && now.duration_since(at) < Self::AT_LEAST_EVERY);
        if !fresh {
            self.0 = Some((stamp, now));
        }
        !fresh
    }

    const AT_LEAST_EVERY: Duration = Duration::from_secs(2);
}

impl Seen {
    /// The checkpoint file's stamp when it was last read: what the model in hand was read from.
    pub(super) fn checkpoint_stamp(&self) -> Option<FileStamp> {
        self.checkpoint.0.and_then(|(stamp, _)| stamp)
    }
}

impl Inferrer {
    pub(super) fn reload_manifest_if_grown(&mut self) {
        let stamp = FileStamp::of(&self.rundir.manifest());
        if !self.seen.manifest.changed(stamp) {
            return;
        }
        if let Ok((_, m)) = Manifest::load(&self.rundir.manifest())
            && m.len() != self.manifest.len()
        {
            tracing::info!(images = m.len(), "the dataset grew");
            self.manifest = m;
        }
    }

    pub(super) fn reload_checkpoint_if_new(&mut self) {
        let path = self.rundir.checkpoint();
        let stamp = FileStamp::of(&path);
        // The model may be out on a background pass: then the file is read again.
        if stamp.is_none() || (!self.seen.checkpoint.changed(stamp) && self.model.is_some()) {
            return;
        }
        let size = self.args.model.input_size;
        let loaded = match self.mode {
            Mode::Head => Head::load(&path, Device::Cpu).map(|(h, m)| (Model::Head(h), m)),
            Mode::Finetune => {
                FinetuneModel::load(&path, binann_model::BACKBONE_NAME, size, self.device).map(|(f, m)| (Model::Finetune(Box::new(f)), m))
            }
        };
        match loaded.map_err(anyhow::Error::from).and_then(|(model, meta)| {
            binann_model::check_compatible(&meta, binann_model::BACKBONE_NAME, size)?;
            anyhow::ensure!(
                meta.mode == self.mode.name(),
                "checkpoint is a {} model, this inferrer runs in {} mode",
                meta.mode,
                self.mode.name()
            );
            Ok((model, meta))
        }) {
            Ok((model, meta)) => {
                if self.model.as_ref().is_none_or(|(_, m)| m.generation != meta.generation) {
                    self.model = Some((model, meta));
                }
            }
            Err(e) => {
                if self.model.is_none() {
                    tracing::error!("refusing the checkpoint {}: {e:#}", path.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_again_when_replaced_and_at_least_every_two_seconds() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("file");
        let stamp = || FileStamp::of(&path);
        let mut last = LastRead::default();
        assert!(last.changed(stamp()), "never read: read it (even while missing)");
        assert!(!last.changed(stamp()), "still missing");
        binann_core::atomic::write_atomic(&path, b"one").unwrap();
        assert!(last.changed(stamp()), "created");
        assert!(!last.changed(stamp()), "unchanged");
        binann_core::atomic::write_atomic(&path, b"two").unwrap();
        assert!(last.changed(stamp()), "replaced by a file of the same size");
        assert!(!last.changed(stamp()));
        last.0 = last.0.map(|(s, at)| (s, at - LastRead::AT_LEAST_EVERY));
        assert!(last.changed(stamp()), "read again after two seconds even when unchanged");
        assert!(!last.changed(stamp()));
    }
}
