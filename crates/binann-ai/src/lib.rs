//! binann-ai: the two processes that need libtorch.
//!
//! - [`trainer`]: watches the annotations, trains on every label, writes the checkpoint.
//! - [`inferrer`]: watches the checkpoint, embeds every image once (head mode) and predicts
//!   every unlabelled image, writing the predictions; its own docs map its parts.
//! - `training_rows`: the head's examples, kept from round to round by the trainer.
//! - [`embedding_cache`]: the embedding cache (chunk files in `RUNDIR/embeddings`) as both see it.
//! - [`model_args`]: the model options both share.
//! - [`scout`]: a pixel model that chooses which images the inferrer embeds next during the
//!   first pass (when the inferrer trusts and retrains it: `inferrer::scout_policy`).
//! - [`predictor`]: `predictor.json`, the description of a predictor folder exported by
//!   `binann-predict`.

pub mod embedding_cache;
pub mod inferrer;
pub mod model_args;
pub mod predictor;
pub mod scout;
pub mod trainer;
mod training_rows;

use std::time::Duration;

use binann_core::RunDirFile;
use binann_core::manifest::Manifest;
use binann_core::rundir::RunDir;
use binann_core::watch::{FileWatcher, WatchOptions};

/// Waits until the server has written the manifest, reporting what is wrong meanwhile.
pub fn wait_for_manifest(rundir: &RunDir, watch: WatchOptions) -> Manifest {
    let mut watcher = FileWatcher::new(vec![rundir.manifest()], watch);
    let mut said = false;
    loop {
        match Manifest::load(&rundir.manifest()) {
            Ok((_, m)) => return m,
            Err(e) if e.is_not_found() => {
                if !said {
                    tracing::info!("waiting for the server to write {}", rundir.manifest().display());
                    said = true;
                }
            }
            Err(e) => tracing::error!("waiting for a readable manifest: {e}"),
        }
        watcher.wait(Duration::from_secs(5));
    }
}

/// The information about a checkpoint that travels with predictions and rankings.
pub fn model_info(meta: &binann_model::ModelMeta) -> binann_core::predictions::ModelInfo {
    binann_core::predictions::ModelInfo {
        checkpoint_generation: meta.generation,
        checkpoint_ms: meta.created_ms,
        labels_used: meta.labels_used,
        positives_used: meta.positives,
        mode: meta.mode.clone(),
        backbone: meta.backbone.clone(),
        input_size: meta.input_size,
        loss: meta.loss,
    }
}

/// A progress bar on the terminal (hidden when stderr is not one).
pub fn progress_bar(total: u64, message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total).with_message(message.to_owned());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
