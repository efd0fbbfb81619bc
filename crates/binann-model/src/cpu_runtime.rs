//! What runs the frozen backbone on a CPU: ONNX Runtime or OpenVINO, whichever is faster here.
//!
//! libtorch runs MobileNetV2 at about a quarter of the speed these runtimes reach on the same
//! cores. Between the two, neither wins everywhere: on the machine binann is measured on, OpenVINO
//! is about 1.15 × faster per core at 64 px and ONNX Runtime about 1.3 × faster at 224 px, and the
//! balance moves with the CPU. So a backbone loads both, times each on one batch of its own input
//! size ([`CpuRuntime::fastest`], about a second), and keeps the faster. Both make the same
//! numbers as libtorch (cosine ≥ 0.9999, tested), so the choice never changes an embedding.
//!
//! Both run one single-threaded stream per core ([`MAX_STREAMS`] at most), each batch split among
//! them ([`run_streams`]): the layers of a small input are too small to split across cores well.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::mobilenet::{EMBED_DIM, MobileNetV2Features};
use crate::onnx::OnnxBackbone;
use crate::openvino_runtime::OpenVinoBackbone;

/// Most streams a backbone runs at once; past it, each stream gets more threads.
pub(crate) const MAX_STREAMS: usize = 4;

/// A runtime that can run the backbone on a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// ONNX Runtime's CPU execution provider ([`crate::onnx`]).
    OnnxRuntime,
    /// OpenVINO's CPU plugin ([`crate::openvino_runtime`]).
    OpenVino,
}

impl Runtime {
    /// Every CPU runtime, in the order a tie is decided.
    pub const ALL: [Runtime; 2] = [Runtime::OnnxRuntime, Runtime::OpenVino];

    /// The name logs, benchmarks and [`crate::Backbone::runtime`] use.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::OnnxRuntime => "onnxruntime",
            Runtime::OpenVino => "openvino",
        }
    }
}

/// How a backbone picks its CPU runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// The faster of those installed on the backbone's input size, timed at load (about a
    /// second): for a process that embeds a folder.
    Fastest,
    /// The first of [`Runtime::ALL`] that is installed, untimed: for a process that embeds a few
    /// images (the trainer's labelled images the inferrer has not reached yet, seed images).
    FirstInstalled,
    /// This one, or libtorch.
    Only(Runtime),
}

/// The backbone's levels embedding in one CPU runtime.
#[derive(Debug)]
pub enum CpuRuntime {
    /// Sessions of ONNX Runtime.
    OnnxRuntime(OnnxBackbone),
    /// Compiled models of OpenVINO.
    OpenVino(OpenVinoBackbone),
}

impl CpuRuntime {
    /// The runtime `choice` picks over `features`' graph on `threads` cores for `side`-pixel
    /// input, or why none runs.
    pub(crate) fn choose(choice: RuntimeChoice, features: &MobileNetV2Features, side: usize, threads: usize) -> Result<Self, String> {
        match choice {
            RuntimeChoice::Fastest => Self::fastest(features, side, threads),
            RuntimeChoice::Only(runtime) => Self::load(runtime, features, threads),
            RuntimeChoice::FirstInstalled => {
                let mut missing = Vec::new();
                for runtime in Runtime::ALL {
                    match Self::load(runtime, features, threads) {
                        Ok(r) => return Ok(r),
                        Err(why) => missing.push(why),
                    }
                }
                Err(missing.join("; "))
            }
        }
    }

    /// `runtime` over `features`' graph on `threads` cores, or why it cannot run.
    fn load(runtime: Runtime, features: &MobileNetV2Features, threads: usize) -> Result<Self, String> {
        match runtime {
            Runtime::OnnxRuntime => OnnxBackbone::new(features, threads).map(CpuRuntime::OnnxRuntime),
            Runtime::OpenVino => OpenVinoBackbone::new(features, threads).map(CpuRuntime::OpenVino),
        }
    }

    /// The faster of the installed runtimes on `side`-pixel input, timed here, or why none runs.
    fn fastest(features: &MobileNetV2Features, side: usize, threads: usize) -> Result<Self, String> {
        let mut loaded = Vec::new();
        let mut missing = Vec::new();
        for runtime in Runtime::ALL {
            match Self::load(runtime, features, threads) {
                Ok(r) => loaded.push(r),
                Err(why) => missing.push(why),
            }
        }
        if loaded.len() < 2 {
            return loaded.pop().ok_or_else(|| missing.join("; "));
        }
        let trial = Trial::new(side, threads);
        let times = trial.time(&loaded);
        let best = (0..loaded.len()).min_by_key(|&i| times[i]).expect("two runtimes");
        let rates: Vec<String> =
            loaded.iter().zip(&times).map(|(r, t)| format!("{} {:.0} images/s", r.runtime().name(), trial.rate(*t))).collect();
        tracing::info!(side, "fastest CPU runtime: {} ({})", loaded[best].runtime().name(), rates.join(", "));
        Ok(loaded.swap_remove(best))
    }

    /// Which runtime this is.
    pub fn runtime(&self) -> Runtime {
        match self {
            CpuRuntime::OnnxRuntime(_) => Runtime::OnnxRuntime,
            CpuRuntime::OpenVino(_) => Runtime::OpenVino,
        }
    }

    /// Embeds `count` preprocessed images of `side`×`side` (`pixels`: count×3×side×side values).
    pub fn embed(&self, pixels: &[f32], count: usize, side: usize) -> Result<Vec<f32>, String> {
        match self {
            CpuRuntime::OnnxRuntime(r) => r.embed(pixels, count, side),
            CpuRuntime::OpenVino(r) => r.embed(pixels, count, side),
        }
    }
}

/// The batch the runtimes are timed on: noise (zeros could take shortcuts), 16 images a stream,
/// as the inferrer's default batch of 32 splits on two cores.
struct Trial {
    pixels: Vec<f32>,
    count: usize,
    side: usize,
}

impl Trial {
    /// Fewest timed runs of each runtime.
    const RUNS: usize = 5;
    /// Least time each runtime is timed for, unless it has run 4 × [`Trial::RUNS`] times.
    const LEAST: Duration = Duration::from_millis(400);

    fn new(side: usize, threads: usize) -> Self {
        let count = 16 * threads.clamp(1, MAX_STREAMS);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let pixels = (0..count * 3 * side * side)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect();
        Self { pixels, count, side }
    }

    /// Each runtime's median time on the batch, after one run that warms it up (and, for
    /// OpenVINO, compiles the shape). The runtimes take turns, so that a burst of load elsewhere
    /// falls on both, until each has run [`Trial::RUNS`] times and for [`Trial::LEAST`].
    fn time(&self, runtimes: &[CpuRuntime]) -> Vec<Duration> {
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); runtimes.len()];
        let once = |runtime: &CpuRuntime| {
            let started = Instant::now();
            runtime.embed(&self.pixels, self.count, self.side).map_or(Duration::MAX, |_| started.elapsed())
        };
        for runtime in runtimes {
            once(runtime);
        }
        // A runtime that fails times as Duration::MAX: saturating, so it never wins and never overflows.
        let enough = |t: &Vec<Duration>| t.len() >= Self::RUNS && t.iter().fold(Duration::ZERO, |a, b| a.saturating_add(*b)) >= Self::LEAST;
        while !times.iter().all(enough) && times[0].len() < 4 * Self::RUNS {
            for (runtime, times) in runtimes.iter().zip(&mut times) {
                times.push(once(runtime));
            }
        }
        times
            .into_iter()
            .map(|mut t| {
                t.sort();
                t[t.len() / 2]
            })
            .collect()
    }

    fn rate(&self, time: Duration) -> f64 {
        self.count as f64 / time.as_secs_f64()
    }
}

/// The shared library of runtime `what` to load: the one `variable` names, otherwise the newest
/// file in `dir` whose name starts with `prefix` (`scripts/setup.sh` installs the runtimes there);
/// or why there is none (`variable` set empty, or nothing installed).
pub(crate) fn installed_library(what: &str, variable: &str, dir: &str, prefix: &str) -> Result<PathBuf, String> {
    if let Some(given) = std::env::var_os(variable) {
        return if given.is_empty() { Err(format!("{variable} is set empty")) } else { Ok(PathBuf::from(given)) };
    }
    let not_installed = || format!("{what} is not installed (scripts/setup.sh installs it)");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| not_installed())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    found.sort();
    found.pop().ok_or_else(not_installed)
}

/// Splits `count` images of `side` pixels among `streams` and runs `run(stream, pixels, images)`
/// on each part at once, the first on this thread; the embeddings in order, or the first error.
pub(crate) fn run_streams<S: Sync>(
    streams: &[S],
    pixels: &[f32],
    count: usize,
    side: usize,
    run: impl Fn(&S, &[f32], usize) -> Result<Vec<f32>, String> + Sync,
) -> Result<Vec<f32>, String> {
    let per_stream = count.div_ceil(streams.len()).max(1);
    let image = 3 * side * side;
    let parts: Vec<&[f32]> = pixels.chunks(per_stream * image).collect();
    let mut results: Vec<Result<Vec<f32>, String>> = Vec::with_capacity(parts.len());
    std::thread::scope(|scope| {
        let run = &run;
        let others: Vec<_> =
            parts.iter().zip(streams).skip(1).map(|(part, stream)| scope.spawn(move || run(stream, part, part.len() / image))).collect();
        results.push(parts.first().map_or(Ok(Vec::new()), |part| run(&streams[0], part, part.len() / image)));
        results.extend(others.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a runtime stream panicked".into()))));
    });
    let mut values = Vec::with_capacity(count * EMBED_DIM);
    for part in results {
        values.extend(part?);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_library_is_the_newest_file_with_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["libopenvino_c.so.2540", "libopenvino_c.so.2641", "libopenvino.so.2641", "plugins.xml"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let path = dir.path().to_str().unwrap();
        // A variable nobody sets: the folder decides.
        let found = installed_library("OpenVINO", "BINANN_TEST_NEVER_SET", path, "libopenvino_c.so.");
        assert_eq!(found, Ok(dir.path().join("libopenvino_c.so.2641")));
        let none = Err("ONNX Runtime is not installed (scripts/setup.sh installs it)".to_owned());
        assert_eq!(installed_library("ONNX Runtime", "BINANN_TEST_NEVER_SET", path, "libonnxruntime.so."), none);
        assert_eq!(installed_library("ONNX Runtime", "BINANN_TEST_NEVER_SET", &format!("{path}/missing"), "libonnxruntime.so."), none);
    }
}
