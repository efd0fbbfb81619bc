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
    /// but the trainer's one (at least 1). On the cores left over the inferrer runs network
    /// streams at the lowest priority, which use only what the trainer, the selector and the
    /// server leave idle.
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

    /// Network streams at the lowest priority on the cores [`InferrerArgs::cpu_threads`] leaves
    /// to the others: they compute only when the trainer, the selector and the server leave
    /// those cores idle.
    pub fn idle_streams(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(self.cpu_threads())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_inferrer_leaves_the_trainer_one_core_and_computes_there_only_at_idle_priority() {
        let args = |extra: &[&str]| InferrerArgs::parse_from([&["binann-inferrer", "--rundir", "/nonexistent"], extra].concat());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(args(&[]).threads, 0, "the default is resolved on the machine");
        assert_eq!(args(&[]).cpu_threads(), (cores - 1).max(1));
        assert_eq!(args(&["--threads", "3"]).cpu_threads(), 3);
        // The core left to the others gets an idle-priority stream (none on a 1-core machine).
        assert_eq!(args(&[]).idle_streams(), cores - (cores - 1).max(1));
        assert_eq!(args(&["--threads", &cores.to_string()]).idle_streams(), 0);
    }
}
