//! The inferrer's command line, and the part of the dataset it covers.

use binann_core::cli::CommonArgs;

use crate::model_args::ModelArgs;

/// Which part of the dataset an inferrer covers: images whose id modulo N is K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, 0-based.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("shard {s:?} must look like K/N, e.g. 0/2"))?;
        let index: u32 = k.parse().map_err(|_| format!("shard index {k:?} is not a number"))?;
        let count: u32 = n.parse().map_err(|_| format!("shard count {n:?} is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= K < N"));
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// True when image `id` belongs to this shard.
    pub fn owns(self, id: u32) -> bool {
        id % self.count == self.index
    }
}

/// binann's inferrer: predicts every unlabelled image whenever the checkpoint changes, forever.
#[derive(Debug, clap::Parser)]
#[command(name = "binann-inferrer", version)]
pub struct InferrerArgs {
    /// The run directory and how to watch it.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The model and the device.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cover only images whose id modulo N is K (run N inferrers, on one or several machines
    /// sharing RUNDIR; the selector merges their predictions).
    #[arg(long, env = "BINANN_SHARD", default_value = "0/1")]
    pub shard: Shard,
    /// Network threads (and image decoding threads) of the inferrer on the CPU; 0: every core
    /// but the trainer's one (at least 1). On 2 cores a second one did not make the first pass
    /// measurably faster beside the trainer (every image predicted after 20 s against 21-23 s at
    /// 20,000 images), and one leaves the other core to the trainer and the selector.
    #[arg(long, env = "BINANN_INFERRER_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// While the first embedding pass runs, embed the images most like the positives (by a
    /// logistic regression on 12-pixel thumbnails) in turn with the default order; off: the
    /// default order alone. Switched off by itself where thumbnails are not cheap (see
    /// `binann_ai::scout`).
    #[arg(long, env = "BINANN_SCOUT", default_value_t = true, action = clap::ArgAction::Set)]
    pub scout: bool,
}

impl InferrerArgs {
    /// The threads [`InferrerArgs::threads`] asks for, 0 resolved on this machine.
    pub fn cpu_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_inferrer_leaves_the_trainer_one_core_unless_told_its_threads() {
        let args = |extra: &[&str]| InferrerArgs::parse_from([&["binann-inferrer", "--rundir", "/nonexistent"], extra].concat());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(args(&[]).threads, 0, "the default is resolved on the machine");
        assert_eq!(args(&[]).cpu_threads(), (cores - 1).max(1));
        assert_eq!(args(&["--threads", "3"]).cpu_threads(), 3);
    }
}
