//! The options the trainer and the inferrer share: which model, on which device.

use std::path::{Path, PathBuf};

use binann_core::manifest::Manifest;
use binann_core::ranking;

use binann_model::DeviceChoice;

/// How the network is built and run.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// ImageNet weights of the backbone (made by scripts/setup.sh).
    #[arg(long, env = "BINANN_WEIGHTS", default_value = binann_model::DEFAULT_WEIGHTS_PATH)]
    pub weights: PathBuf,
    /// Side of the square network input in pixels, or auto: the median shorter side of 64 of the
    /// folder's images, clamped to 64..160 and rounded to a multiple of 32 (an existing checkpoint's
    /// size is kept). Smaller is faster; 224 is the backbone's own.
    #[arg(long = "input-size", env = "BINANN_INPUT_SIZE", default_value = "auto")]
    pub input_size_choice: InputSize,
    /// The input side in use: set by [`ModelArgs::choose_input_size`] once the folder is known.
    #[arg(skip)]
    pub input_size: u32,
    /// Where to run: auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, env = "BINANN_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// head: frozen backbone, cached embeddings, a small head trained in milliseconds, on every
    /// device; finetune: the whole network trained end to end (GPU), without the embeddings
    /// that the sketches, the order before the first positive, look-alikes, "more like this" and
    /// the scout are made from.
    #[arg(long, env = "BINANN_MODE", value_enum, default_value = "head")]
    pub mode: ModeChoice,
    /// Images per network batch.
    #[arg(long, env = "BINANN_BATCH", default_value_t = 32)]
    pub batch: usize,
    /// Dataset folder on this machine (default: the folder the manifest was scanned from).
    #[arg(long, env = "BINANN_DATADIR")]
    pub datadir: Option<PathBuf>,
}

/// `--input-size`: pixels, or chosen from the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSize {
    /// From the folder's images (or the existing checkpoint).
    Auto,
    /// This many pixels.
    Pixels(u32),
}

impl std::str::FromStr for InputSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match s.parse::<u32>() {
            Ok(px) if (32..=1024).contains(&px) => Ok(Self::Pixels(px)),
            _ => Err(format!("expected auto or a number of pixels from 32 to 1024, got {s:?}")),
        }
    }
}

/// Images sampled to choose the input size: enough for a stable median, few enough to read in
/// milliseconds (only headers are read).
const INPUT_SIZE_SAMPLE: usize = 64;

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    /// head, on every device: accepted for configurations that name it (it once meant finetune
    /// on CUDA, a path that lacks the features made from embeddings).
    #[value(hide = true)]
    Auto,
    /// Frozen backbone + head on cached embeddings.
    Head,
    /// The whole network.
    Finetune,
}

/// The mode actually used. Its name (the option's spelling) is what checkpoints store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Frozen backbone + head.
    Head,
    /// The whole network.
    Finetune,
}

impl ModelArgs {
    /// Resolves `auto` choices against the device actually available.
    pub fn resolve(&self) -> anyhow::Result<(tch::Device, Mode)> {
        let device = binann_model::resolve_device(self.device)?;
        let mode = match self.mode {
            ModeChoice::Head | ModeChoice::Auto => Mode::Head,
            ModeChoice::Finetune => Mode::Finetune,
        };
        Ok((device, mode))
    }

    /// Settles the input size. `auto` keeps the size of an existing checkpoint (so a restart or a
    /// grown folder never invalidates the cached embeddings and the model), and otherwise reads
    /// the sizes of a fixed sample of the folder, so the trainer and the inferrer, started
    /// together, choose the same. Logs what was chosen and why.
    pub fn choose_input_size(&mut self, manifest: &Manifest, datadir: &Path, checkpoint: &Path) {
        self.input_size = match self.input_size_choice {
            InputSize::Pixels(px) => {
                tracing::info!(input_size = px, "input size set by BINANN_INPUT_SIZE");
                px
            }
            InputSize::Auto => match binann_model::checkpoint::read_meta(checkpoint) {
                Ok(meta) => {
                    tracing::info!(input_size = meta.input_size, "input size of the existing checkpoint (BINANN_INPUT_SIZE=auto)");
                    meta.input_size
                }
                Err(_) => {
                    let sides: Vec<u32> = ranking::default_order(manifest.len(), ranking::DEFAULT_ORDER_SEED)
                        .into_iter()
                        .take(INPUT_SIZE_SAMPLE)
                        .filter_map(|id| binann_model::preprocess::shorter_side(&datadir.join(&manifest.paths[id as usize])))
                        .collect();
                    let median = binann_model::preprocess::median_side(&sides);
                    let px = binann_model::preprocess::input_size_for(median);
                    tracing::info!(
                        input_size = px,
                        sampled = sides.len(),
                        median_side = median.unwrap_or(0),
                        "input size chosen from the folder's images (set BINANN_INPUT_SIZE to override)"
                    );
                    px
                }
            },
        };
    }

    /// The name embeddings are tagged with: a chunk made by another model is not reused.
    pub fn embedding_model_key(&self) -> String {
        format!("{}@{}px", binann_model::BACKBONE_NAME, self.input_size)
    }

    /// Loads the backbone, with an error that says how to get the weights, and logs what runs it.
    pub fn load_backbone(&self, device: tch::Device, choice: binann_model::RuntimeChoice) -> anyhow::Result<binann_model::Backbone> {
        let backbone = binann_model::Backbone::load_with(&self.weights, self.input_size, device, choice)?;
        match backbone.runtime() {
            (runtime, None) => tracing::info!(runtime, input_size = self.input_size, "backbone loaded"),
            (runtime, Some(why)) => tracing::info!(runtime, input_size = self.input_size, "backbone loaded ({why})"),
        }
        Ok(backbone)
    }
}

impl Mode {
    /// The name stored in checkpoints: the option's spelling, which binann-model's
    /// `MODE_HEAD`/`MODE_FINETUNE` also spell (a test checks).
    pub fn name(self) -> String {
        binann_core::cli::value_name(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    /// Head mode on every device unless finetune is asked for: `auto`, which once meant finetune
    /// on CUDA, now means head too (the resolution no longer looks at the device).
    #[test]
    fn head_is_the_mode_unless_finetune_is_asked_for() {
        use clap::Parser;
        let mode = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["trainer", "--device", "cpu"], args].concat()).unwrap();
            cli.model.resolve().unwrap().1
        };
        assert_eq!(Cli::try_parse_from(["trainer"]).unwrap().model.mode, ModeChoice::Head, "the default names head itself");
        assert_eq!(mode(&[]), Mode::Head);
        assert_eq!(mode(&["--mode", "auto"]), Mode::Head);
        assert_eq!(mode(&["--mode", "finetune"]), Mode::Finetune);
    }

    #[test]
    fn modes_are_spelled_as_the_option_and_the_checkpoints_spell_them() {
        assert_eq!(Mode::Head.name(), binann_model::MODE_HEAD);
        assert_eq!(Mode::Finetune.name(), binann_model::MODE_FINETUNE);
        for (choice, mode) in [(ModeChoice::Head, Mode::Head), (ModeChoice::Finetune, Mode::Finetune)] {
            assert_eq!(binann_core::cli::value_name(&choice), mode.name());
        }
    }
}
