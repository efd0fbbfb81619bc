//! `binann-bench-recall`: what a person gets on a folder of rare positives. For each of `--seeds`
//! draws of a Fashion-MNIST folder (`--images`, `--positive` kinds at `--prevalence`), binann is
//! started exactly as a user starts it (`launch.sh HOST PORT true DATADIR RUNDIR all`, nothing
//! set but what the calling shell sets), and a simulated person (`binann simulate`) labels from
//! the moment the page answers, at `--pace` labels/s. The order it was shown is compared with a
//! random order of the same folder and with the oracle (all positives first): labels to the first
//! and the tenth positive, recall at 1, 1.5, 2 and 3 × #positives labels, labels for 95 % recall,
//! work saved over random at 95 % recall (WSS@95), recall per kind of positive, and how much of
//! the folder the model had predicted when #positives labels were given. Writes `recall.json`,
//! one trace per draw and `recall.svg`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use binann_cli::simulate::{SimulateArgs, Step, read_truth, read_truth_rows, simulate, write_trace};
use binann_core::ranking::shuffle_key;
use clap::Parser;
use plotters::prelude::*;
use serde::Serialize;

/// What a person gets on folders of rare positives: binann started as launch.sh starts it,
/// against a random order and the oracle, over several draws; prints figures, writes
/// recall.json and recall.svg.
#[derive(Debug, Parser)]
#[command(name = "binann-bench-recall")]
struct RecallArgs {
    /// Folder with the Fashion-MNIST .gz files (scripts/setup.sh fetches them).
    #[arg(long, default_value = ".cache/fashion-mnist")]
    source: PathBuf,
    /// Images in each folder (up to 70,000: Fashion-MNIST's train and test splits).
    #[arg(long, alias = "count", default_value_t = 20_000)]
    images: usize,
    /// The positive kinds, separated by commas (see `binann demo-data --help`).
    #[arg(long, default_value = "trouser,ankle_boot")]
    positive: String,
    /// Share of positive images, split evenly over the kinds (0: take the first --images as they
    /// come, about 10 % per class).
    #[arg(long, default_value_t = 0.01)]
    prevalence: f64,
    /// With --prevalence 0: skip this many images first (60000: the test split).
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Draws of the folder (each with its own images and its own run); figures are reported as the
    /// median and the range over the draws.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Labels the simulated person gives (default: 3 × #positives).
    #[arg(long)]
    labels: Option<usize>,
    /// Its pace, in labels per second.
    #[arg(long, default_value_t = 5.0)]
    pace: f64,
    /// Seconds it waits after the page first answers before labelling (0: at once, as a person who
    /// knows the page does).
    #[arg(long, default_value_t = 0.0)]
    read: f64,
    /// Give binann this many example images of each positive kind, from outside the folder, as
    /// seed images (`BINANN_SEED_IMAGES`), as a person who has a few examples would.
    #[arg(long, default_value_t = 0)]
    seed_images: usize,
    /// Each draw's run directory (`OUT/seed-N/run`) was made beforehand, e.g. embedded by the
    /// `deploy/` shards: launch.sh resumes it instead of starting over.
    #[arg(long)]
    prepared: bool,
    /// Folder for the datasets, runs, traces, recall.json and recall.svg. A folder of images of
    /// your own is used as draw N when it is `OUT/seed-N/data`, beside its ground truth in
    /// `OUT/seed-N/truth.csv` (columns path, label and class, as `binann demo-data` writes them).
    #[arg(long, default_value = "bench-out/recall")]
    out: PathBuf,
}

/// The figures of one labelling order.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    /// Labels until the first positive (None: not within the labels given).
    first_positive: Option<usize>,
    /// Labels until the tenth positive.
    tenth_positive: Option<usize>,
    /// Recall after 1, 1.5, 2 and 3 × #positives labels (None where fewer labels were given).
    recall_at: BTreeMap<String, Option<f64>>,
    /// Labels until 95 % of the positives were found.
    labels_for_95: Option<usize>,
    /// Work saved over sampling at random at 95 % recall: (N - labels_for_95) / N - 0.05.
    wss_95: Option<f64>,
    /// Recall of each kind of positive after 2 × #positives labels (or all the labels given).
    recall_per_kind: BTreeMap<String, f64>,
}

/// The multiples of #positives at which recall is reported.
const MARKS: [(f64, &str); 4] = [(1.0, "1x"), (1.5, "1.5x"), (2.0, "2x"), (3.0, "3x")];

/// Figures of the order `kinds` (the kind of each image shown, None for a negative) over a folder
/// of `images` images with `positives_per_kind`.
fn figures(kinds: &[Option<&str>], images: usize, positives_per_kind: &BTreeMap<String, usize>) -> Figures {
    let positives: usize = positives_per_kind.values().sum();
    let found: Vec<usize> = kinds
        .iter()
        .scan(0, |n, k| {
            *n += usize::from(k.is_some());
            Some(*n)
        })
        .collect();
    let labels_until = |count: usize| found.iter().position(|f| *f >= count).map(|i| i + 1);
    let recall_after = |labels: usize| (labels <= found.len() && labels > 0).then(|| found[labels - 1] as f64 / positives.max(1) as f64);
    let labels_for_95 = labels_until((0.95 * positives as f64).ceil() as usize);
    let per_kind_window = (2 * positives).min(kinds.len());
    let recall_per_kind = positives_per_kind
        .iter()
        .map(|(kind, total)| {
            let hit = kinds[..per_kind_window].iter().filter(|k| **k == Some(kind.as_str())).count();
            (kind.clone(), hit as f64 / (*total).max(1) as f64)
        })
        .collect();
    Figures {
        first_positive: labels_until(1),
        tenth_positive: labels_until(10),
        recall_at: MARKS.iter().map(|(m, name)| ((*name).to_owned(), recall_after((m * positives as f64).round() as usize))).collect(),
        labels_for_95,
        wss_95: labels_for_95.map(|n| (images - n) as f64 / images as f64 - 0.05),
        recall_per_kind,
    }
}

/// One draw: the folder, binann's run on it, and the random order of the same folder.
#[derive(Debug, Serialize)]
struct Draw {
    seed: u64,
    /// Whether the folder was written from Fashion-MNIST by this benchmark (false: it was given in --out).
    written: bool,
    images: usize,
    positives: usize,
    labels: usize,
    with_binann: Figures,
    random_order: Figures,
    /// Share of the folder the model had predicted when #positives labels were given.
    predicted_share_at_1x: Option<f64>,
    /// Checks of the positives-left interval (every 100 labels, once there is one).
    interval_checks: usize,
    /// How many of them held the true number of positives left.
    interval_held: usize,
    /// Labels per second the simulated person achieved.
    labels_per_s: f64,
    /// Seconds from the first label until the model had predicted every image not labelled by
    /// then (None: not within the run).
    covered_all_after_s: Option<f64>,
    /// Seconds from a label's acknowledgement until the ranking served came from a model trained
    /// on it (stats read four times a second), median and 90th percentile over the labels that
    /// got there within the run, and how many did.
    label_to_ranking_median_s: Option<f64>,
    label_to_ranking_p90_s: Option<f64>,
    labels_reflected: usize,
    /// Each program's peak resident memory, sampled every 10 s, in MiB.
    peak_resident_mib: BTreeMap<String, f64>,
    /// Recall after each label (for the plot).
    #[serde(skip)]
    curve: Vec<f64>,
    #[serde(skip)]
    random_curve: Vec<f64>,
}

/// The kind of every positive image of the truth CSV written by `binann demo-data`
/// (path,label,class).
fn read_kinds(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    Ok(read_truth_rows(path)?
        .into_iter()
        .filter(|(_, positive, _)| *positive)
        .map(|(p, _, class)| (p, class.unwrap_or_else(|| "positive".into())))
        .collect())
}

/// A free TCP port on 127.0.0.1 (free when asked; launch.sh binds it moments later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `launch.sh` in its own process group, stopped (SIGTERM to the group, as Ctrl-C does) on drop.
struct Launched(std::process::Child);

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.0.id())]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

fn launch(
    root: &Path,
    data: &Path,
    rundir: &Path,
    reset: bool,
    seed_images: Option<&Path>,
    log: &Path,
) -> anyhow::Result<(String, Launched)> {
    use std::os::unix::process::CommandExt;
    let port = free_port()?;
    let log_file = std::fs::File::create(log)?;
    let mut launch = Command::new("bash");
    if let Some(seeds) = seed_images {
        launch.env("BINANN_SEED_IMAGES", seeds);
    }
    let child = launch
        .arg(root.join("launch.sh"))
        .args(["127.0.0.1", &port.to_string(), if reset { "true" } else { "false" }])
        .arg(data)
        .arg(rundir)
        .arg("all")
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting launch.sh")?;
    let mut launched = Launched(child);
    let url = format!("http://127.0.0.1:{port}");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    // launch.sh builds first when the build is stale: allow for a compile.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if agent.get(&format!("{url}/health")).call().is_ok() {
            return Ok((url, launched));
        }
        if let Some(status) = launched.0.try_wait()? {
            bail!("launch.sh exited ({status}) before the page answered; see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!("the page did not answer within 15 minutes; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One reading of `/api/stats`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the person started.
    at: f64,
    /// Images the model had predicted.
    predicted: u64,
    /// Labels the model behind the ranking served was trained on.
    trained_on: u64,
    /// Positives labelled.
    positives: u64,
    /// The positives-left interval, when there was one.
    interval: Option<(f64, f64)>,
    /// The model had predicted every image not labelled or skipped.
    model_covers_rest: bool,
}

/// Polls `/api/stats` four times a second.
fn poll_stats(url: String, start: Instant, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let stats = agent.get(&format!("{url}/api/stats")).call().ok().and_then(|r| r.into_json::<binann_core::api::Stats>().ok());
            if let Some(stats) = stats {
                let predicted = stats.model.as_ref().map_or(0, |m| m.predicted);
                samples.push(Sample {
                    at: start.elapsed().as_secs_f64(),
                    predicted,
                    trained_on: stats.model.as_ref().map_or(0, |m| m.trained_on),
                    model_covers_rest: predicted > 0 && predicted + stats.annotated + stats.skipped >= stats.total,
                    positives: stats.positives,
                    interval: stats.positives_left.map(|l| (l.low, l.high)),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        samples
    })
}

/// Samples, every 10 s, the resident memory of the processes in process group `group` (launch.sh
/// and what it started) and keeps each program's peak, in MiB (Linux's `/proc`; none elsewhere).
fn poll_memory(group: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<BTreeMap<String, f64>> {
    std::thread::spawn(move || {
        let mut peak: BTreeMap<String, f64> = BTreeMap::new();
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next += Duration::from_secs(10);
                let mut now: BTreeMap<String, f64> = BTreeMap::new();
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let Some((name, rss)) = group_member_rss(&entry.path(), group) else { continue };
                    *now.entry(name).or_default() += rss;
                }
                for (name, rss) in now {
                    let p = peak.entry(name).or_default();
                    *p = p.max(rss);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        peak
    })
}

/// The program name and resident MiB of the binann process at `/proc/PID` if it is in `group`.
fn group_member_rss(proc_dir: &Path, group: u32) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    // After the name: state, parent, process group.
    let pgrp: u32 = rest.split_whitespace().nth(2)?.parse().ok()?;
    if pgrp != group || !name.starts_with("binann-") {
        return None;
    }
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((name.trim_start_matches("binann-").to_owned(), kib / 1024.0))
}

/// Seconds from each label's acknowledgement until the ranking served came from a model trained
/// on it (the first stats sample whose model was trained on that many labels), for the labels
/// that got there within the run.
fn label_to_ranking_s(steps: &[Step], samples: &[Sample]) -> Vec<f64> {
    steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| samples.iter().find(|s| s.at >= step.time_s && s.trained_on > i as u64).map(|s| s.at - step.time_s))
        .collect()
}

fn run_draw(args: &RecallArgs, root: &Path, bin: &Path, seed: u64) -> anyhow::Result<Draw> {
    let dir = args.out.join(format!("seed-{seed}"));
    let data = dir.join("data");
    let truth_csv = dir.join("truth.csv");
    // A folder this benchmark wrote says so, for the figures' title; one put there is the user's.
    let marker = dir.join("fashion-mnist.txt");
    if !data.exists() {
        let mut demo = Command::new(bin.join("binann"));
        demo.args(["demo-data", "--count", &args.images.to_string(), "--positive", &args.positive, "--seed", &seed.to_string()])
            .arg("--source")
            .arg(&args.source)
            .arg("--out")
            .arg(&data)
            .arg("--truth")
            .arg(&truth_csv);
        if args.prevalence > 0.0 {
            demo.args(["--prevalence", &args.prevalence.to_string()]);
            if args.seed_images > 0 {
                demo.args(["--seed-images", &args.seed_images.to_string()]).arg("--seed-out").arg(dir.join("seed-images"));
            }
        } else {
            demo.args(["--skip", &args.skip.to_string()]);
        }
        if !demo.status()?.success() {
            let _ = std::fs::remove_dir_all(&data);
            bail!("writing the dataset failed");
        }
        std::fs::write(&marker, format!("written by binann demo-data: {} images, positive {:?}\n", args.images, args.positive))?;
    }
    let written = marker.exists();
    let truth = read_truth(&truth_csv)?;
    let kinds = read_kinds(&truth_csv)?;
    let mut positives_per_kind = BTreeMap::new();
    for kind in kinds.values() {
        *positives_per_kind.entry(kind.clone()).or_insert(0usize) += 1;
    }
    let positives = kinds.len();
    let labels = args.labels.unwrap_or(3 * positives).min(truth.len());

    let seed_images = (args.seed_images > 0).then(|| dir.join("seed-images"));
    if let Some(seeds) = &seed_images
        && !seeds.is_dir()
    {
        bail!("{} is missing: remove {} to draw the folder again with its seed images", seeds.display(), data.display());
    }
    let rundir = dir.join("run");
    if args.prepared && !rundir.join("manifest.bin").is_file() {
        bail!("--prepared: {} holds no manifest.bin (scripts/bench-large.sh --shards prepares one)", rundir.display());
    }
    let (url, launched) = launch(root, &data, &rundir, !args.prepared, seed_images.as_deref(), &dir.join("launch.log"))?;
    if args.read > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(args.read));
    }
    eprintln!("draw {seed}: {} images, {positives} positives; {labels} labels at {} labels/s on {url}", truth.len(), args.pace);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_stats(url.clone(), start, stop.clone());
    let memory = poll_memory(launched.0.id(), stop.clone());
    let sim = SimulateArgs {
        url,
        truth: truth_csv.clone(),
        labels,
        pace: args.pace,
        client: "bench-recall".into(),
        annotator: "bench-recall".into(),
        token: None,
        trace: None,
    };
    let steps = simulate(&sim, &truth);
    stop.store(true, Ordering::Relaxed);
    let samples = poller.join().unwrap_or_default();
    let peak_resident_mib = memory.join().unwrap_or_default();
    drop(launched);
    let steps = steps?;
    write_trace(&dir.join("trace.csv"), &steps)?;

    let shown: Vec<Option<&str>> = steps.iter().map(|s: &Step| kinds.get(&s.path).map(String::as_str)).collect();
    // The random order: the same folder shuffled with this draw's seed, labelled to the end (so
    // that its labels for 95 % recall are known).
    let mut paths: Vec<&String> = truth.keys().collect();
    paths.sort();
    paths.sort_by_cached_key(|p| shuffle_key(seed, path_hash(p)));
    let random: Vec<Option<&str>> = paths.iter().map(|p| kinds.get(*p).map(String::as_str)).collect();
    let at_1x = steps.get(positives.saturating_sub(1)).map(|s| s.time_s);
    let predicted_share_at_1x =
        at_1x.and_then(|t| samples.iter().rev().find(|s| s.at <= t).map(|s| s.predicted as f64 / truth.len() as f64));
    // The positives-left interval, checked every 100 labels against the truth at that moment.
    let checks: Vec<bool> = steps
        .iter()
        .skip(99)
        .step_by(100)
        .filter_map(|step| samples.iter().find(|s| s.at >= step.time_s))
        .filter_map(|s| s.interval.map(|(low, high)| (low, high, (positives as u64).saturating_sub(s.positives) as f64)))
        .map(|(low, high, left)| low <= left && left <= high)
        .collect();
    let elapsed = steps.last().map_or(0.0, |s| s.time_s);
    let mut latencies = label_to_ranking_s(&steps, &samples);
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied();
    let curve_of = |kinds: &[Option<&str>]| -> Vec<f64> {
        let mut n = 0;
        kinds[..labels.min(kinds.len())]
            .iter()
            .map(|k| {
                n += usize::from(k.is_some());
                n as f64 / positives.max(1) as f64
            })
            .collect()
    };
    Ok(Draw {
        seed,
        written,
        images: truth.len(),
        positives,
        labels: steps.len(),
        with_binann: figures(&shown, truth.len(), &positives_per_kind),
        random_order: figures(&random, truth.len(), &positives_per_kind),
        predicted_share_at_1x,
        covered_all_after_s: samples.iter().find(|s| s.model_covers_rest).map(|s| s.at),
        label_to_ranking_median_s: at(0.5),
        label_to_ranking_p90_s: at(0.9),
        labels_reflected: latencies.len(),
        peak_resident_mib,
        interval_checks: checks.len(),
        interval_held: checks.iter().filter(|c| **c).count(),
        labels_per_s: steps.len() as f64 / elapsed.max(1e-9),
        curve: curve_of(&shown),
        random_curve: curve_of(&random),
    })
}

/// A stable 32-bit hash of a path (FNV-1a), the key the random order shuffles by.
fn path_hash(path: &str) -> u32 {
    path.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// "median (min–max)" over the draws, or "–" when no draw reached the figure. A draw that did not
/// reach it (None: not within the labels given) counts as beyond every draw that did, so the
/// median is "not reached" when half the draws or more did not: a median of the draws that did
/// alone would flatter the order that fails most often.
fn spread(values: &[Option<f64>], format: impl Fn(f64) -> String) -> String {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return "–".into();
    }
    v.sort_by(f64::total_cmp);
    let n = values.len();
    let at = |i: usize| v.get(i).copied();
    let median = if n % 2 == 1 { at(n / 2) } else { at(n / 2 - 1).zip(at(n / 2)).map(|(a, b)| (a + b) / 2.0) };
    let missing = n - v.len();
    let range = if v.len() == 1 { format(v[0]) } else { format!("{}–{}", format(v[0]), format(v[v.len() - 1])) };
    match median {
        None => format!("not reached in {missing} of {n} ({range} in the others)"),
        Some(m) if missing > 0 => format!("{} ({range}, {missing} of {n} not reached)", format(m)),
        Some(m) if v.len() == 1 => format(m),
        Some(m) => format!("{} ({range})", format(m)),
    }
}

fn main() -> std::process::ExitCode {
    // The benchmark prints its own figures; only warnings go to the log.
    binann_core::cli::main("binann-bench-recall", "warn", || run(&RecallArgs::parse()))
}

/// Runs the benchmark.
fn run(args: &RecallArgs) -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.parent().context("no folder")?.to_owned();
    let root = std::env::current_dir()?;
    if !root.join("launch.sh").exists() {
        bail!("run binann-bench-recall from binann's folder (it starts launch.sh as a user does)");
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    std::fs::create_dir_all(&args.out)?;
    let settings: Vec<String> = std::env::vars().filter(|(k, _)| k.starts_with("BINANN_")).map(|(k, v)| format!("{k}={v}")).collect();
    let mut draws = Vec::new();
    for seed in 1..=args.seeds {
        draws.push(run_draw(args, &root, &bin, seed)?);
    }
    let kinds: Vec<String> = draws[0].with_binann.recall_per_kind.keys().cloned().collect();
    let row = |name: &str, pick: &dyn Fn(&Figures) -> Option<f64>, format: &dyn Fn(f64) -> String| {
        let ai: Vec<_> = draws.iter().map(|d| pick(&d.with_binann)).collect();
        let random: Vec<_> = draws.iter().map(|d| pick(&d.random_order)).collect();
        println!("| {name} | {} | {} |", spread(&ai, format), spread(&random, format));
    };
    let count = |v: f64| format!("{v:.0}");
    let share = |v: f64| format!("{v:.3}");
    println!(
        "\n{} draw(s) of {} images ({}); {} labels/s from the moment the page answers; settings: {}",
        draws.len(),
        spread(&draws.iter().map(|d| Some(d.images as f64)).collect::<Vec<_>>(), count),
        if draws.iter().all(|d| d.written) {
            format!(
                "Fashion-MNIST, positive {:?} at {}",
                args.positive,
                if args.prevalence > 0.0 { format!("{} %", 100.0 * args.prevalence) } else { "as they come".into() }
            )
        } else {
            "folders given in --out".to_owned()
        },
        args.pace,
        if settings.is_empty() { "none (the defaults)".to_owned() } else { settings.join(" ") }
    );
    println!(
        "positives per draw: {}; median (range) over the draws\n",
        spread(&draws.iter().map(|d| Some(d.positives as f64)).collect::<Vec<_>>(), count)
    );
    println!("| figure | binann (launch.sh) | random order |");
    println!("|---|---|---|");
    row("labels to the first positive", &|f| f.first_positive.map(|v| v as f64), &count);
    row("labels to 10 positives", &|f| f.tenth_positive.map(|v| v as f64), &count);
    for (_, mark) in MARKS {
        row(&format!("recall at {mark} #positives labels"), &|f| f.recall_at[mark], &share);
    }
    row("labels for 95 % recall", &|f| f.labels_for_95.map(|v| v as f64), &count);
    row("WSS@95", &|f| f.wss_95, &share);
    for kind in &kinds {
        row(&format!("recall of {kind} at 2x"), &|f| f.recall_per_kind.get(kind).copied(), &share);
    }
    println!(
        "| predicted share of the folder at 1x #positives labels | {} | |",
        spread(&draws.iter().map(|d| d.predicted_share_at_1x).collect::<Vec<_>>(), share)
    );
    let (held, checks) = draws.iter().fold((0, 0), |(h, c), d| (h + d.interval_held, c + d.interval_checks));
    println!(
        "| positives-left interval held the truth (checks every 100 labels) | {} | |",
        if checks > 0 { format!("{held} of {checks} ({:.0} %)", 100.0 * held as f64 / checks as f64) } else { "no checks".into() }
    );
    println!(
        "| seconds until the model had predicted every image not labelled yet | {} | |",
        spread(&draws.iter().map(|d| d.covered_all_after_s).collect::<Vec<_>>(), |v| format!("{v:.0}"))
    );
    let seconds = |v: f64| format!("{v:.2}");
    println!(
        "| seconds from a label to a ranking trained on it, median / p90 | {} / {} | |",
        spread(&draws.iter().map(|d| d.label_to_ranking_median_s).collect::<Vec<_>>(), seconds),
        spread(&draws.iter().map(|d| d.label_to_ranking_p90_s).collect::<Vec<_>>(), seconds)
    );
    let programs: std::collections::BTreeSet<&String> = draws.iter().flat_map(|d| d.peak_resident_mib.keys()).collect();
    let peaks: Vec<String> = programs
        .iter()
        .map(|name| format!("{name} {}", spread(&draws.iter().map(|d| d.peak_resident_mib.get(*name).copied()).collect::<Vec<_>>(), count)))
        .collect();
    println!("| peak resident memory, MiB (sampled every 10 s) | {} | |", peaks.join(", "));
    println!(
        "| labels per second achieved | {} | |",
        spread(&draws.iter().map(|d| Some(d.labels_per_s)).collect::<Vec<_>>(), |v| format!("{v:.2}"))
    );
    let json = args.out.join("recall.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&serde_json::json!({
            "images": args.images, "positive": args.positive, "prevalence": args.prevalence, "pace": args.pace,
            "settings": settings, "draws": draws,
        }))?,
    )?;
    let svg = args.out.join("recall.svg");
    plot(&svg, &draws)?;
    println!("\nfigures: {}; recall curves: {}", json.display(), svg.display());
    Ok(())
}

fn plot(path: &Path, draws: &[Draw]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = draws.iter().map(|d| d.curve.len().max(d.random_curve.len())).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("binann: share of the positives found versus labels given", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0usize..n, 0f64..1.0)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("labels given").y_desc("recall").draw().map_err(|e| err(&e))?;
    let positives = draws[0].positives.max(1);
    let oracle: Vec<f64> = (1..=n).map(|i| (i.min(positives)) as f64 / positives as f64).collect();
    let mut series: Vec<(String, &[f64], RGBColor)> = vec![("oracle (all positives first)".into(), &oracle, RGBColor(150, 150, 150))];
    for (i, d) in draws.iter().enumerate() {
        let label = |what: &str| if i == 0 { what.to_owned() } else { String::new() };
        series.push((label("binann at the defaults"), &d.curve, RGBColor(30, 120, 220)));
        series.push((label("random order"), &d.random_curve, RGBColor(220, 80, 40)));
    }
    for (name, values, color) in series {
        let drawn = chart
            .draw_series(LineSeries::new(values.iter().enumerate().map(|(i, v)| (i + 1, *v)), color.stroke_width(2)))
            .map_err(|e| err(&e))?;
        if !name.is_empty() {
            drawn.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_a_known_order() {
        // 100 images, 4 positives: two "a", two "b".
        let per_kind: BTreeMap<String, usize> = [("a".to_owned(), 2), ("b".to_owned(), 2)].into();
        let mut order: Vec<Option<&str>> = vec![None; 100];
        order[2] = Some("a");
        order[5] = Some("a");
        order[6] = Some("b");
        order[40] = Some("b");
        let f = figures(&order, 100, &per_kind);
        assert_eq!(f.first_positive, Some(3));
        assert_eq!(f.tenth_positive, None);
        // After 4, 6, 8 and 12 labels: one, two, three and three of the four.
        assert_eq!(f.recall_at["1x"], Some(0.25));
        assert_eq!(f.recall_at["1.5x"], Some(0.5));
        assert_eq!(f.recall_at["2x"], Some(0.75));
        assert_eq!(f.recall_at["3x"], Some(0.75));
        // 95 % of 4 is 4 positives: the 41st label.
        assert_eq!(f.labels_for_95, Some(41));
        assert!((f.wss_95.unwrap() - (59.0 / 100.0 - 0.05)).abs() < 1e-12);
        // Within 2 × 4 = 8 labels: both "a", one "b".
        assert_eq!(f.recall_per_kind["a"], 1.0);
        assert_eq!(f.recall_per_kind["b"], 0.5);
        // Fewer labels than a mark: no figure rather than a wrong one.
        let short = figures(&order[..7], 100, &per_kind);
        assert_eq!(short.recall_at["2x"], None);
        assert_eq!(short.labels_for_95, None);
    }

    #[test]
    fn a_label_reaches_the_ranking_when_the_model_served_was_trained_on_it() {
        let step = |time_s| Step { id: 0, path: String::new(), truth: false, prob: None, time_s };
        let sample = |at, trained_on| Sample { at, predicted: 0, trained_on, positives: 0, interval: None, model_covers_rest: false };
        // Labels at 1.0, 1.2 and 3.0 s; a model trained on 2 labels served from 2.5 s, on 3 never.
        let steps = [step(1.0), step(1.2), step(3.0)];
        let samples = [sample(0.5, 0), sample(1.5, 0), sample(2.5, 2), sample(3.5, 2)];
        let latencies = label_to_ranking_s(&steps, &samples);
        assert_eq!(latencies.len(), 2, "the third label never reached the ranking");
        assert!((latencies[0] - 1.5).abs() < 1e-9 && (latencies[1] - 1.3).abs() < 1e-9, "{latencies:?}");
    }

    #[test]
    fn spread_reports_median_range_and_misses() {
        let f = |v: f64| format!("{v:.0}");
        assert_eq!(spread(&[Some(3.0), Some(1.0), Some(10.0)], f), "3 (1–10)");
        assert_eq!(spread(&[Some(3.0), None, Some(1.0)], f), "3 (1–3, 1 of 3 not reached)");
        // Half the draws or more not reached: so is the median.
        assert_eq!(spread(&[Some(4.0), None], f), "not reached in 1 of 2 (4 in the others)");
        assert_eq!(spread(&[Some(30.0), None, Some(2.0), None, None], f), "not reached in 3 of 5 (2–30 in the others)");
        assert_eq!(spread(&[None], f), "–");
    }
}
