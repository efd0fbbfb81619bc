//! What runs the frozen backbone on a CPU: ONNX Runtime or OpenVINO, whichever is faster here.
//!
//! libtorch runs MobileNetV2 at about a quarter of the speed these runtimes reach on the same
//! cores. Between the two, neither wins everywhere: on the machine binann is measured on, OpenVINO
//! is about 1.15 × faster per core at 64 px and ONNX Runtime about 1.3 × faster at 224 px, and the
//! balance moves with the CPU. So a backbone that embeds a folder loads both and lets them take
//! turns on its own first batches ([`CpuRuntimes`]), then keeps the faster. Both make the same
//! numbers as libtorch (cosine ≥ 0.9999, tested), so the choice never changes an embedding, and
//! the batches that time them are real work: timing them on a batch of noise at load held the
//! first embeddings back by 2.3 s at 224 px and 0.75 s at 64 px.
//!
//! Both run one single-threaded stream per core ([`MAX_STREAMS`] at most), each batch split among
//! them ([`run_streams`]): the layers of a small input are too small to split across cores well.
//! A process that leaves cores to others (the inferrer) may add streams at the lowest priority
//! ([`crate::device::set_idle_streams`]), which compute only on what the others leave idle.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
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
    /// The faster of those installed on the backbone's input size, timed on its first batches:
    /// for a process that embeds a folder.
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
    /// `runtime` over `features`' graph on `threads` cores and `idle` idle-priority streams, or
    /// why it cannot run.
    fn load(runtime: Runtime, features: &MobileNetV2Features, threads: usize, idle: usize) -> Result<Self, String> {
        match runtime {
            Runtime::OnnxRuntime => OnnxBackbone::new(features, threads, idle).map(CpuRuntime::OnnxRuntime),
            Runtime::OpenVino => OpenVinoBackbone::new(features, threads, idle).map(CpuRuntime::OpenVino),
        }
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

/// The CPU runtime a backbone embeds with: the one [`RuntimeChoice`] picked, or, for
/// [`RuntimeChoice::Fastest`], every installed one while they take turns on the backbone's first
/// batches.
#[derive(Debug)]
pub(crate) struct CpuRuntimes {
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    /// Taking turns until each has been timed enough ([`Timing::enough`]).
    Timing {
        runtimes: Vec<CpuRuntime>,
        timing: Timing,
    },
    Chosen(CpuRuntime),
}

impl CpuRuntimes {
    /// The runtime `choice` picks over `features`' graph on `threads` cores and `idle`
    /// idle-priority streams, or why none runs.
    pub(crate) fn choose(choice: RuntimeChoice, features: &MobileNetV2Features, threads: usize, idle: usize) -> Result<Self, String> {
        let (candidates, first_only) = match choice {
            RuntimeChoice::Fastest => (&Runtime::ALL[..], false),
            RuntimeChoice::FirstInstalled => (&Runtime::ALL[..], true),
            RuntimeChoice::Only(ref runtime) => (std::slice::from_ref(runtime), true),
        };
        let (mut runtimes, mut missing) = (Vec::new(), Vec::new());
        for runtime in candidates {
            match CpuRuntime::load(*runtime, features, threads, idle) {
                Ok(r) => runtimes.push(r),
                Err(why) => missing.push(why),
            }
            if first_only && !runtimes.is_empty() {
                break;
            }
        }
        let state = match runtimes.len() {
            0 => return Err(missing.join("; ")),
            1 => State::Chosen(runtimes.remove(0)),
            n => State::Timing { runtimes, timing: Timing::new(n) },
        };
        Ok(Self { state: Mutex::new(state) })
    }

    /// The runtime chosen, or `None` while the installed ones are still being timed.
    pub(crate) fn chosen(&self) -> Option<Runtime> {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Chosen(r) => Some(r.runtime()),
            State::Timing { .. } => None,
        }
    }

    /// Embeds `count` preprocessed images of `side`×`side` in the chosen runtime, or in the one
    /// whose turn it is while they are timed; `Err` names the runtime that failed.
    pub(crate) fn embed(&self, pixels: &[f32], count: usize, side: usize) -> Result<Vec<f32>, String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let named = |r: &CpuRuntime, result: Result<Vec<f32>, String>| result.map_err(|why| format!("{}: {why}", r.runtime().name()));
        let (runtimes, timing) = match &mut *state {
            State::Chosen(r) => return named(r, r.embed(pixels, count, side)),
            State::Timing { runtimes, timing } => (runtimes, timing),
        };
        let turn = timing.turn();
        let started = Instant::now();
        let result = runtimes[turn].embed(pixels, count, side);
        timing.record(turn, if result.is_ok() { started.elapsed() } else { Duration::MAX }, count);
        let result = named(&runtimes[turn], result);
        if timing.enough() {
            let best = timing.fastest();
            let rates: Vec<String> = runtimes
                .iter()
                .zip(&timing.runs)
                .map(|(r, runs)| format!("{} {:.0} images/s", r.runtime().name(), 1.0 / median(runs)))
                .collect();
            let batches = timing.batches();
            tracing::info!(
                side,
                "fastest CPU runtime: {} ({}; timed on the first {batches} batches)",
                runtimes[best].runtime().name(),
                rates.join(", ")
            );
            let chosen = runtimes.swap_remove(best);
            *state = State::Chosen(chosen);
        }
        result
    }
}

/// Runtimes taking turns on real batches: what each batch took.
#[derive(Debug)]
struct Timing {
    /// Whether each runtime has had its first batch, which warms it up (and, for OpenVINO,
    /// compiles the shape) and is not timed.
    warm: Vec<bool>,
    /// Seconds per image of each timed batch, per runtime (infinite for a batch that failed).
    runs: Vec<Vec<f64>>,
    /// Time spent on the timed batches, per runtime.
    spent: Vec<Duration>,
}

impl Timing {
    /// Fewest timed batches of each runtime.
    const RUNS: usize = 5;
    /// Least time each runtime is timed for, unless it has run 4 × [`Timing::RUNS`] batches.
    const LEAST: Duration = Duration::from_millis(400);

    fn new(runtimes: usize) -> Self {
        Self { warm: vec![false; runtimes], runs: vec![Vec::new(); runtimes], spent: vec![Duration::ZERO; runtimes] }
    }

    /// Whose turn it is: a runtime not warmed up yet, otherwise the one timed least often (the
    /// first on a tie), so that a burst of load elsewhere falls on each alike.
    fn turn(&self) -> usize {
        self.warm.iter().position(|w| !w).unwrap_or_else(|| (0..self.runs.len()).min_by_key(|&i| self.runs[i].len()).unwrap_or(0))
    }

    /// Notes that `runtime` took `elapsed` ([`Duration::MAX`]: failed) on `count` images.
    fn record(&mut self, runtime: usize, elapsed: Duration, count: usize) {
        if !std::mem::replace(&mut self.warm[runtime], true) {
            return;
        }
        let per_image = if elapsed == Duration::MAX { f64::INFINITY } else { elapsed.as_secs_f64() / count.max(1) as f64 };
        self.runs[runtime].push(per_image);
        self.spent[runtime] = self.spent[runtime].saturating_add(elapsed);
    }

    /// Each runtime has run [`Timing::RUNS`] timed batches for [`Timing::LEAST`], or 4 ×
    /// [`Timing::RUNS`] batches.
    fn enough(&self) -> bool {
        self.runs
            .iter()
            .zip(&self.spent)
            .all(|(runs, spent)| runs.len() >= 4 * Self::RUNS || (runs.len() >= Self::RUNS && *spent >= Self::LEAST))
    }

    /// Batches run so far, the untimed first ones included.
    fn batches(&self) -> usize {
        self.runs.iter().map(Vec::len).sum::<usize>() + self.warm.iter().filter(|w| **w).count()
    }

    /// The runtime with the least median time per image.
    fn fastest(&self) -> usize {
        (0..self.runs.len()).min_by(|&a, &b| median(&self.runs[a]).total_cmp(&median(&self.runs[b]))).unwrap_or(0)
    }
}

/// The median of `values` (infinite when there are none).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::INFINITY)
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

/// The threads of each stream a runtime runs for `threads` cores and `idle` idle-priority
/// streams, and how many of them, the first ones, are its own: one stream per core up to
/// [`MAX_STREAMS`], the cores shared out among them (the first ones taking what is left over),
/// then the idle-priority streams, one thread each.
pub(crate) fn stream_threads(threads: usize, idle: usize) -> (Vec<usize>, usize) {
    let threads = threads.max(1);
    let own = threads.min(MAX_STREAMS);
    let each = (0..own).map(|s| threads / own + usize::from(s < threads % own)).chain(std::iter::repeat_n(1, idle)).collect();
    (each, own)
}

/// Runs `count` images of `side` pixels on `streams` at once, the first `own` at this thread's
/// priority and the rest at the lowest ([`lower_priority`]), the first stream on this thread; the
/// embeddings in order, or the first error.
///
/// With streams all alike the batch is split evenly, one part each. With idle-priority streams it
/// is cut into twice as many parts as streams, which each stream takes in turn as it finishes its
/// last: an idle-priority stream that other processes keep off the cores takes few parts, and the
/// batch waits at most for the one it holds.
pub(crate) fn run_streams<S: Sync>(
    streams: &[S],
    own: usize,
    pixels: &[f32],
    count: usize,
    side: usize,
    run: impl Fn(&S, &[f32], usize) -> Result<Vec<f32>, String> + Sync,
) -> Result<Vec<f32>, String> {
    let alike = own >= streams.len();
    let parts = if alike { streams.len() } else { 2 * streams.len() };
    let per_part = count.div_ceil(parts).max(1);
    let image = 3 * side * side;
    let parts: Vec<&[f32]> = pixels.chunks(per_part * image).collect();
    let next = AtomicUsize::new(0);
    // The parts stream `s` runs, (part, embeddings): its own when the streams are alike,
    // otherwise the next one not taken, until none is left.
    let work = |s: usize, stream: &S| {
        let mut done = Vec::new();
        loop {
            let at = match alike {
                true if done.is_empty() => s,
                true => return done,
                false => next.fetch_add(1, Ordering::Relaxed),
            };
            let Some(part) = parts.get(at) else { return done };
            done.push((at, run(stream, part, part.len() / image)));
        }
    };
    let mut results: Vec<(usize, Result<Vec<f32>, String>)> = Vec::with_capacity(parts.len());
    std::thread::scope(|scope| {
        let work = &work;
        let others: Vec<_> = streams
            .iter()
            .enumerate()
            .take(parts.len())
            .skip(1)
            .map(|(s, stream)| {
                scope.spawn(move || {
                    if s >= own {
                        lower_priority();
                    }
                    work(s, stream)
                })
            })
            .collect();
        if let Some(first) = streams.first() {
            results.extend(work(0, first));
        }
        for handle in others {
            results.extend(handle.join().unwrap_or_else(|_| vec![(usize::MAX, Err("a runtime stream panicked".into()))]));
        }
    });
    results.sort_by_key(|(at, _)| *at);
    let mut values = Vec::with_capacity(count * EMBED_DIM);
    for (_, part) in results {
        values.extend(part?);
    }
    Ok(values)
}

/// Gives the calling thread the lowest priority (nice 19): it then runs only on cores that no
/// thread of normal priority wants, of this process or any other. Linux keeps a nice value per
/// thread; elsewhere [`crate::device::idle_streams`] makes no such streams.
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; `who` 0 is the calling thread on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `batches` turns of two runtimes, the first taking `first` per image and the second
    /// `second` (`Duration::MAX`: it fails), 32 images a batch; the turns taken, in order.
    fn take_turns(timing: &mut Timing, batches: usize, first: Duration, second: Duration) -> Vec<usize> {
        (0..batches)
            .map(|_| {
                let turn = timing.turn();
                let per_image = [first, second][turn];
                timing.record(turn, if per_image == Duration::MAX { per_image } else { per_image * 32 }, 32);
                turn
            })
            .collect()
    }

    #[test]
    fn runtimes_take_turns_on_real_batches_until_each_is_timed_enough() {
        let mut timing = Timing::new(2);
        // Each runtime's first batch warms it up, untimed; then they alternate.
        assert_eq!(take_turns(&mut timing, 6, Duration::from_millis(3), Duration::from_millis(2)), [0, 1, 0, 1, 0, 1]);
        assert_eq!(timing.runs.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        assert!(!timing.enough());
        // 5 and then 6 timed batches each, but the faster has run only 320 and 384 ms: not
        // enough yet; after 7 (448 ms) it is.
        for (batches, each) in [(6, 5), (2, 6)] {
            take_turns(&mut timing, batches, Duration::from_millis(3), Duration::from_millis(2));
            assert_eq!(timing.runs.iter().map(Vec::len).collect::<Vec<_>>(), [each, each]);
            assert!(!timing.enough(), "{:?}", timing.spent);
        }
        take_turns(&mut timing, 2, Duration::from_millis(3), Duration::from_millis(2));
        assert!(timing.enough(), "{:?}", timing.spent);
        assert_eq!(timing.fastest(), 1);
        assert_eq!(timing.batches(), 16);
    }

    #[test]
    fn tiny_batches_stop_the_timing_after_twenty_each_and_a_failing_runtime_never_wins() {
        let mut timing = Timing::new(2);
        let turns = take_turns(&mut timing, 42, Duration::from_micros(5), Duration::MAX);
        assert_eq!(turns.iter().filter(|t| **t == 1).count(), 21);
        assert!(timing.enough());
        assert_eq!(timing.fastest(), 0, "a runtime that fails is never kept");
        assert_eq!(median(&[]), f64::INFINITY);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

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

    /// The nice value of the calling thread.
    #[allow(unsafe_code)]
    fn nice() -> i32 {
        // SAFETY: getpriority only reads its arguments; `who` 0 is the calling thread on Linux.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    /// Runs 10 images of 1 pixel through `streams` fake streams, the first `own` at normal
    /// priority; stream `slow` takes 100 ms a part. Each image's "embedding" is its pixel value
    /// in every column. The embeddings, and (stream, images, nice value) of each part run.
    fn fake_streams(streams: usize, own: usize, slow: Option<usize>) -> (Vec<f32>, Vec<(usize, usize, i32)>) {
        let pixels: Vec<f32> = (0..10).flat_map(|i| [i as f32; 3]).collect();
        let ran = Mutex::new(Vec::new());
        let ids: Vec<usize> = (0..streams).collect();
        let values = run_streams(&ids, own, &pixels, 10, 1, |stream, part, images| {
            if Some(*stream) == slow {
                std::thread::sleep(Duration::from_millis(100));
            }
            ran.lock().unwrap().push((*stream, images, nice()));
            Ok(part.chunks(3).flat_map(|image| [image[0]; EMBED_DIM]).collect())
        })
        .unwrap();
        (values, ran.into_inner().unwrap())
    }

    fn in_order(values: &[f32]) -> bool {
        values.len() == 10 * EMBED_DIM && values.chunks(EMBED_DIM).enumerate().all(|(i, row)| row.iter().all(|v| *v == i as f32))
    }

    #[test]
    fn streams_alike_split_a_batch_evenly_and_keep_its_order() {
        let caller = nice();
        let (values, ran) = fake_streams(2, 2, None);
        assert!(in_order(&values));
        let mut parts: Vec<(usize, usize)> = ran.iter().map(|(s, n, _)| (*s, *n)).collect();
        parts.sort();
        assert_eq!(parts, [(0, 5), (1, 5)], "one part each");
        assert!(ran.iter().all(|(.., nice)| *nice == caller), "{ran:?}");
    }

    #[test]
    fn idle_priority_streams_run_at_the_lowest_priority_and_hold_the_batch_back_one_part_at_most() {
        let caller = nice();
        // One stream of each: 4 parts of 3, 3, 3 and 1 images, taken as the streams finish theirs.
        let (values, ran) = fake_streams(2, 1, None);
        assert!(in_order(&values));
        assert_eq!(ran.iter().map(|(_, n, _)| n).sum::<usize>(), 10);
        assert_eq!(ran.len(), 4, "{ran:?}");
        for (stream, _, nice) in &ran {
            assert_eq!(*nice, if *stream == 0 { caller } else { 19 }, "{ran:?}");
        }
        // An idle-priority stream that other work keeps off the cores (here: asleep) takes one
        // part; the stream of normal priority takes the rest meanwhile.
        let (values, ran) = fake_streams(2, 1, Some(1));
        assert!(in_order(&values));
        assert!(ran.iter().filter(|(s, ..)| *s == 1).count() <= 1, "{ran:?}");
        assert!(ran.iter().filter(|(s, ..)| *s == 0).count() >= 3, "{ran:?}");
    }

    #[test]
    fn cores_are_shared_out_among_the_streams_and_idle_ones_come_last_on_one_thread() {
        assert_eq!(stream_threads(1, 1), (vec![1, 1], 1));
        assert_eq!(stream_threads(0, 0), (vec![1], 1), "at least one thread");
        assert_eq!(stream_threads(3, 0), (vec![1, 1, 1], 3));
        assert_eq!(stream_threads(7, 1), (vec![2, 2, 2, 1, 1], 4), "at most 4 own streams, the first taking the rest");
    }
}
