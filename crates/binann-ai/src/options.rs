//! The options the trainer and the inferrer share: which model, on which device.

use std::path::PathBuf;

use binann_model::DeviceChoice;

/// How the network is built and run.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// ImageNet weights of the backbone (made by scripts/setup.sh).
    #[arg(long, env = "BINANN_WEIGHTS", default_value = binann_model::DEFAULT_WEIGHTS_PATH)]
    pub weights: PathBuf,
    /// Side of the square network input in pixels (smaller is faster; 224 is the backbone's own).
    #[arg(long, env = "BINANN_INPUT_SIZE", default_value_t = 224)]
    pub input_size: u32,
    /// Where to run: auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, env = "BINANN_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// head: frozen backbone, cached embeddings, a small head trained in milliseconds (CPU);
    /// finetune: the whole network (GPU); auto: finetune on CUDA, head otherwise.
    #[arg(long, env = "BINANN_MODE", value_enum, default_value = "auto")]
    pub mode: ModeChoice,
    /// Images per network batch.
    #[arg(long, env = "BINANN_BATCH", default_value_t = 32)]
    pub batch: usize,
    /// Dataset folder on this machine (default: the folder the manifest was scanned from).
    #[arg(long, env = "BINANN_DATADIR")]
    pub datadir: Option<PathBuf>,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    /// finetune on CUDA, head on CPU.
    Auto,
    /// Frozen backbone + head on cached embeddings.
    Head,
    /// The whole network.
    Finetune,
}

/// The mode actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
            ModeChoice::Head => Mode::Head,
            ModeChoice::Finetune => Mode::Finetune,
            ModeChoice::Auto if device.is_cuda() => Mode::Finetune,
            ModeChoice::Auto => Mode::Head,
        };
        anyhow::ensure!(self.input_size >= 32, "--input-size must be at least 32 px, got {}", self.input_size);
        Ok((device, mode))
    }

    /// The name embeddings are tagged with: a chunk made by another model is not reused.
    pub fn embedding_model_key(&self) -> String {
        format!("{}@{}px", binann_model::BACKBONE_NAME, self.input_size)
    }

    /// Loads the backbone, with an error that says how to get the weights.
    pub fn load_backbone(&self, device: tch::Device) -> anyhow::Result<binann_model::Backbone> {
        binann_model::Backbone::load(&self.weights, self.input_size, device)
    }
}

impl Mode {
    /// The name stored in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Head => binann_model::MODE_HEAD,
            Self::Finetune => binann_model::MODE_FINETUNE,
        }
    }
}
