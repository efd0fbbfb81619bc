//! `binann-bench-server`: the server's latency, throughput, start-up time and memory on a
//! synthetic run directory (paths only: nothing is decoded, so no images are needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use binann_core::RunDirFile;
use binann_core::annotations::{Event, Label, Record};
use binann_core::api::{AnnotationRequest, Image, Stats};
use binann_core::codec::FileKind;
use binann_core::journal::{self, JournalWriter};
use binann_core::manifest::Manifest;
use binann_core::rundir::RunDir;
use binann_testkit::{ChildGroup, server_url};
use clap::Parser;

/// Measure the server at scale (a synthetic dataset; prints figures).
#[derive(Debug, Parser)]
#[command(name = "binann-bench-server")]
struct BenchArgs {
    /// Images in the synthetic manifest for the latency and throughput runs.
    #[arg(long, default_value_t = 100_000)]
    images: usize,
    /// Annotations already in the journal before measuring.
    #[arg(long, default_value_t = 50_000)]
    annotations: usize,
    /// next+annotate pairs timed one after another by one client.
    #[arg(long, default_value_t = 2_000)]
    pairs: usize,
    /// Concurrent clients for the sustained-throughput run.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of the sustained-throughput run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Manifest sizes to measure start-up time and memory at.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    scale: Vec<usize>,
    /// The server binary (default: binann-server beside this binary).
    #[arg(long)]
    server: Option<PathBuf>,
}

struct Running {
    /// The server, killed when this is dropped.
    _server: ChildGroup,
    pid: u32,
    base: String,
    startup: Duration,
}

fn synthetic_rundir(dir: &Path, images: usize, annotations: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("data"))?;
    let rundir = RunDir::create_or_open(&dir.join("run"))?;
    let paths = (0..images).map(|i| format!("shard{:04}/image_{i:08}.jpg", i / 1000)).collect();
    Manifest { datadir: dir.join("data").to_string_lossy().into_owned(), paths, scanned_ms: 0 }.save(&rundir.manifest(), 1)?;
    let mut writer = JournalWriter::open::<Record>(&rundir.annotations(), FileKind::Annotations)?.writer;
    let order = binann_core::ranking::default_order(images, binann_core::ranking::DEFAULT_ORDER_SEED);
    let mut framed = Vec::new();
    for (seq, id) in order.iter().take(annotations).enumerate() {
        let label = if seq % 10 == 0 { Label::Positive } else { Label::Negative };
        let record = Record {
            audit: None,
            seq: seq as u64,
            time_ms: binann_core::now_ms(),
            client: "bench-seed".into(),
            annotator: "bench-seed".into(),
            event: Event::Label { id: *id, label, prob: Some(0.5) },
        };
        framed.extend(journal::frame(&record));
    }
    writer.append_framed(&framed)?;
    Ok(())
}

fn start(server: &Path, dir: &Path) -> anyhow::Result<Running> {
    let started = Instant::now();
    let mut child = Command::new(server)
        .args(["--datadir", &dir.join("data").to_string_lossy(), "--rundir", &dir.join("run").to_string_lossy()])
        .args(["--port", "0", "--rescan", "false", "--workers", "2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let pid = child.id();
    let url = server_url(&mut child);
    let _server = ChildGroup(vec![child]);
    let base = url.map_err(anyhow::Error::msg)?;
    // Ready means answering, not just listening.
    ureq::get(&format!("{base}/health")).call()?;
    Ok(Running { _server, pid, base, startup: started.elapsed() })
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One next+annotate pair; the id labelled, or None when nothing is left.
fn pair_id(agent: &ureq::Agent, base: &str, client: &str) -> anyhow::Result<Option<u64>> {
    let next: Vec<Image> = agent.get(&format!("{base}/api/next?count=1")).set("X-Client", client).call()?.into_json()?;
    let Some(id) = next.first().map(|image| image.id) else { return Ok(None) };
    let label = if id % 10 == 0 { Label::Positive } else { Label::Negative };
    agent.post(&format!("{base}/api/annotations")).set("X-Client", client).send_json(AnnotationRequest { id, label })?;
    Ok(Some(u64::from(id)))
}

fn pair(agent: &ureq::Agent, base: &str, client: &str) -> anyhow::Result<bool> {
    pair_id(agent, base, client).map(|id| id.is_some())
}

fn main() -> std::process::ExitCode {
    // The benchmark prints its own figures; only warnings go to the log.
    binann_core::cli::main("binann-bench-server", "warn", || run(&BenchArgs::parse()))
}

/// Runs the benchmark and prints its figures.
fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let server = match &args.server {
        Some(s) => s.clone(),
        None => std::env::current_exe()?.with_file_name("binann-server"),
    };
    let tmp = tempfile::tempdir()?;
    println!("binann-bench-server ({}; {} cores)", server.display(), std::thread::available_parallelism().map_or(1, |n| n.get()));

    let dir = tmp.path().join("latency");
    synthetic_rundir(&dir, args.images, args.annotations)?;
    let running = start(&server, &dir)?;
    let pid = running.pid;
    println!("\n{} images, {} annotations already in the journal", args.images, args.annotations);
    println!("  start-up (spawn to first /health answer): {:.3} s, resident memory {:.1} MiB", running.startup.as_secs_f64(), rss_mib(pid));
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..50 {
        pair(&agent, &running.base, "warm-up")?;
    }
    let mut times = Vec::with_capacity(args.pairs);
    for _ in 0..args.pairs {
        let t = Instant::now();
        pair(&agent, &running.base, "latency")?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "  next+annotate pair, one client, {} pairs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.pairs,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let per_client: Vec<(Vec<u64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let base = running.base.clone();
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new().build();
                    let client = format!("load{c}");
                    let (mut ids, mut errors) = (Vec::new(), 0usize);
                    while Instant::now() < deadline {
                        match pair_id(&agent, &base, &client) {
                            Ok(Some(id)) => ids.push(id),
                            Ok(None) => break,
                            Err(_) => errors += 1,
                        }
                    }
                    (ids, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let done: usize = per_client.iter().map(|(ids, _)| ids.len()).sum();
    let errors: usize = per_client.iter().map(|(_, e)| *e).sum();
    let mut seen = std::collections::HashSet::new();
    let doubles = per_client.iter().flat_map(|(ids, _)| ids).filter(|id| !seen.insert(**id)).count();
    println!(
        "  sustained, {} clients for {:.0} s: {done} annotations, {:.0} annotations/s (each durable before its answer), {errors} errors, {doubles} images labelled by two clients; resident memory {:.1} MiB",
        args.clients,
        elapsed,
        done as f64 / elapsed,
        rss_mib(pid)
    );
    let expected = (args.annotations + 50 + args.pairs + done) as u64;
    drop(running);
    let restarted = start(&server, &dir)?;
    let stats: Stats = ureq::get(&format!("{}/api/stats", restarted.base)).call()?.into_json()?;
    let present = stats.annotated;
    println!("  after a restart: {present} annotations present, {expected} acknowledged: {} lost", expected.saturating_sub(present));
    drop(restarted);

    for &n in &args.scale {
        // The selector's work at this scale: order n predictions and write the ranking.
        let mut rng = binann_core::ranking::SplitMix64(7);
        let ids: Vec<u32> = (0..n as u32).collect();
        let logits: Vec<f32> = ids.iter().map(|_| rng.next_f64() as f32 * 20.0 - 10.0).collect();
        let started = Instant::now();
        let order = binann_selector::select(&ids, &logits, binann_selector::Strategy::MaxProbability, 1);
        let ranking = binann_core::ranking::Ranking {
            ids: order.iter().map(|&i| ids[i]).collect(),
            probs: order.iter().map(|&i| binann_core::predictions::probability(logits[i])).collect(),
            selector: "max-probability".into(),
            model: None,
            predicted: n as u64,
            created_ms: 0,
        };
        let ranking_path = tmp.path().join(format!("ranking-{n}.bin"));
        ranking.save(&ranking_path, 1)?;
        println!(
            "\n{n} predictions: selector (order + atomic write) {:.0} ms, ranking file {:.1} MiB",
            started.elapsed().as_secs_f64() * 1000.0,
            std::fs::metadata(&ranking_path)?.len() as f64 / (1 << 20) as f64
        );
        let dir = tmp.path().join(format!("scale{n}"));
        synthetic_rundir(&dir, n, 0)?;
        let running = start(&server, &dir)?;
        let pid = running.pid;
        let t = Instant::now();
        pair(&agent, &running.base, "scale")?;
        let first = t.elapsed();
        println!(
            "\n{n} images: start-up {:.3} s, resident memory {:.1} MiB, first next+annotate {:.2} ms, manifest file {:.1} MiB",
            running.startup.as_secs_f64(),
            rss_mib(pid),
            first.as_secs_f64() * 1000.0,
            std::fs::metadata(dir.join("run/manifest.bin"))?.len() as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
