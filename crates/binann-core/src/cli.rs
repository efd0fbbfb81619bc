//! Options every long-running process shares (each a flag with an environment variable).

use std::path::PathBuf;
use std::time::Duration;

use crate::watch::WatchOptions;

/// The shortest polling interval a process accepts: below it, polling a shared disk only burns CPU
/// (and 0 would spin).
pub const MIN_POLL_MS: u64 = 10;

/// The run directory and how to watch it.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Run directory shared by all binann processes.
    #[arg(long, env = "BINANN_RUNDIR")]
    pub rundir: PathBuf,
    /// Watch the run directory by polling only (for network disks shared between machines).
    #[arg(long, env = "BINANN_FORCE_POLLING", default_value_t = false, action = clap::ArgAction::Set)]
    pub force_polling: bool,
    /// Polling interval in milliseconds, at least 10 (also the fallback when file events are unavailable).
    #[arg(long, env = "BINANN_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(MIN_POLL_MS..))]
    pub poll_ms: u64,
    /// Do one round of work and exit (for scripts and tests) instead of looping forever.
    #[arg(long, default_value_t = false)]
    pub once: bool,
}

impl CommonArgs {
    /// The watcher settings these options describe.
    pub fn watch_options(&self) -> WatchOptions {
        WatchOptions {
            poll_interval: Duration::from_millis(self.poll_ms.max(MIN_POLL_MS)),
            force_polling: self.force_polling,
            ..Default::default()
        }
    }
}

/// The spelling of an option value: clap's name for the variant (its kebab-case). Enums that are
/// also options, in files or in the API spell themselves through this and [`parse_value`], so
/// there is no second table of names to fall out of step.
pub fn value_name<T: clap::ValueEnum>(value: &T) -> String {
    value.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
}

/// The variant spelled `s` (see [`value_name`]), exactly: no other case, no aliases.
pub fn parse_value<T: clap::ValueEnum>(s: &str) -> Option<T> {
    T::from_str(s, false).ok()
}

/// The `main` of every binann binary: logs to stderr at `default_log` (e.g. "info"; `RUST_LOG`
/// overrides it), runs `run`, and on an error prints `NAME: error: ...` with its causes and exits
/// with status 2, so every process fails the same way for launch.sh and for the person reading.
pub fn main<E: std::fmt::Display>(name: &str, default_log: &str, run: impl FnOnce() -> Result<(), E>) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_log.into()))
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Makes glibc give every freed block of 16 MiB or more back to the kernel at once. For a process
/// that reads large files into short-lived buffers between long-lived data (the selector reads
/// every 31 MB embedding chunk): by default glibc raises this threshold to the size of the largest
/// block freed (up to 32 MiB), and later buffers of that size come from the heap, which keeps them.
/// Smaller blocks (a ranking of a million images takes 4 to 9 MB) stay on the heap, reused from one
/// round to the next: up to 64 MiB of free heap is kept rather than handed back. The AI processes keep the opposite setting
/// (`binann_model::with_cpu_runtime_env`): the network's activations are reused every batch. Call
/// it first thing in `main`, before any other thread starts.
#[allow(unsafe_code)]
pub fn return_large_freed_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator, here before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
