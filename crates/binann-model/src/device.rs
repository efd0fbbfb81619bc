//! Choosing where libtorch runs.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use tch::Device;

use crate::error::{Error, Result};

/// The user's device request, as given on a command line or in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device when one is usable, else the CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The CUDA device with this ordinal; an error when CUDA is unavailable.
    Cuda(usize),
}

/// Error for a device string that is none of `auto`, `cpu`, `cuda`, `cuda:N`.
#[derive(Debug, thiserror::Error)]
#[error("invalid device {0:?}: expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")]
pub struct ParseDeviceError(String);

impl FromStr for DeviceChoice {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.trim().to_ascii_lowercase();
        match normalized.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => {
                other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Self::Cuda).ok_or_else(|| ParseDeviceError(s.to_string()))
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Turns a [`DeviceChoice`] into a libtorch device, checking that a requested GPU exists
/// ([`Error::CudaUnavailable`], [`Error::NoSuchCudaDevice`]).
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda(ordinal) => {
            if !tch::Cuda::is_available() {
                return Err(Error::CudaUnavailable { ordinal });
            }
            let visible = tch::Cuda::device_count() as usize;
            if ordinal >= visible {
                return Err(Error::NoSuchCudaDevice { ordinal, visible });
            }
            Ok(Device::Cuda(ordinal))
        }
    }
}

/// Sets the threads this process computes with on the CPU: libtorch's (intra-op) and rayon's,
/// which decodes images beside the network. Call it before either has started any work (rayon's
/// pool is built once; later calls leave it as it is).
pub fn set_threads(threads: usize) {
    let threads = threads.max(1);
    tch::set_num_threads(threads as i32);
    let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
}

/// Idle-priority streams a CPU runtime loaded after this call runs beside its own
/// ([`crate::cpu_runtime`]): at most [`crate::cpu_runtime::MAX_STREAMS`], none where threads
/// cannot be given a priority of their own (outside Linux).
static IDLE_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Lets the backbones this process loads from now on run `streams` more network streams at the
/// lowest priority, beside the ones [`set_threads`] gives them: they compute only on cores that
/// every other thread of the machine leaves idle. For a process that embeds a folder beside
/// others that must answer quickly (the inferrer beside the trainer and the selector).
pub fn set_idle_streams(streams: usize) {
    IDLE_STREAMS.store(streams, Ordering::Relaxed);
}

/// The idle-priority streams [`set_idle_streams`] asked for, as many as this system can run.
pub(crate) fn idle_streams() -> usize {
    if cfg!(target_os = "linux") { IDLE_STREAMS.load(Ordering::Relaxed).min(crate::cpu_runtime::MAX_STREAMS) } else { 0 }
}

/// Set in the environment of a process that [`with_cpu_runtime_env`] has started again.
const RUNTIME_ENV_MARK: &str = "BINANN_RUNTIME_ENV";

/// What libtorch and glibc read once, at start-up, to run the network well on shared CPU cores:
/// - `OMP_WAIT_POLICY=PASSIVE`: libtorch's OpenMP threads sleep between operations instead of
///   spinning; spinning beside other busy threads (the decoders, the trainer) on 2 cores made one
///   embedding pass 4x slower (500 images: 53 s instead of 13 s).
/// - glibc keeps freed memory for reuse (`trim_threshold` 512 MiB) and serves blocks up to 32 MiB
///   from it (`mmap_threshold`), instead of giving every activation back to the kernel and taking
///   it again as fresh zeroed pages: 500 images at 224 px went from 2.2 million page faults and
///   4.7 s of system time to 68,000 and 0.7 s.
///
/// Each is set only where the environment does not set it already.
const RUNTIME_ENV: [(&str, &str); 2] =
    [("OMP_WAIT_POLICY", "PASSIVE"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=536870912:glibc.malloc.mmap_threshold=33554432")];

/// Makes sure this process runs with [`RUNTIME_ENV`]: when a variable is missing, starts this
/// program again in its place (same process id, same arguments) with it set. Call it first thing
/// in `main`, before any thread or libtorch call. Returns (without doing anything) when the
/// environment already has them, or when this program cannot be started again.
pub fn with_cpu_runtime_env() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(RUNTIME_ENV_MARK).is_some() {
        return;
    }
    let missing: Vec<(&str, &str)> = RUNTIME_ENV.iter().copied().filter(|(k, _)| std::env::var_os(k).is_none()).collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let error = std::process::Command::new(exe).args(std::env::args_os().skip(1)).envs(missing).env(RUNTIME_ENV_MARK, "1").exec();
    eprintln!("binann: cannot restart with the CPU runtime settings ({error}); continuing without them");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!(" CPU ".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        for bad in ["", "cuda:", "cuda:x", "cuda:-1", "tpu", "cpu:0"] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(err.to_string().contains("invalid device"), "{bad}: {err}");
        }
        for choice in [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda(2)] {
            assert_eq!(choice.to_string().parse::<DeviceChoice>().unwrap(), choice);
        }
    }

    #[test]
    fn resolves_cpu_and_auto() {
        assert_eq!(resolve_device(DeviceChoice::Cpu).unwrap(), Device::Cpu);
        let auto = resolve_device(DeviceChoice::Auto).unwrap();
        assert_eq!(auto.is_cuda(), tch::Cuda::is_available());
        let beyond = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
        let err = resolve_device(DeviceChoice::Cuda(beyond)).unwrap_err();
        if tch::Cuda::is_available() {
            assert!(matches!(err, Error::NoSuchCudaDevice { ordinal, visible } if ordinal == beyond && visible == beyond), "{err}");
        } else {
            assert!(matches!(err, Error::CudaUnavailable { ordinal: 0 }), "{err}");
        }
    }
}
