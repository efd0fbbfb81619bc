//! `binann-bench-loop`: the AI loop's latency in head mode, once embeddings are cached: from an
//! acknowledged annotation to a ranking file that reflects a checkpoint trained on it.
//!
//! It builds a synthetic run directory (paths only, with cached embeddings in which every tenth
//! image stands out, as a rare class would) and a journal of labels, starts the four real
//! processes on it, and times annotations given through the HTTP API one at a time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::annotations::{Event, Label, Record};
use binann_core::codec::FileKind;
use binann_core::embeddings::{CHUNK, EmbeddingChunk};
use binann_core::journal;
use binann_core::manifest::Manifest;
use binann_core::ranking::{Ranking, SplitMix64};
use binann_core::rundir::RunDir;
use binann_testkit::{ChildGroup, server_url};
use clap::Parser;

/// Measures the loop latency of the AI in head mode on a synthetic dataset.
#[derive(Debug, Parser)]
#[command(name = "binann-bench-loop")]
struct Args {
    /// Images in the synthetic dataset (comma-separated list: one run each).
    #[arg(long, value_delimiter = ',', default_value = "5000,70000")]
    images: Vec<usize>,
    /// Annotations timed per run.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Labels in the journal before the processes start (every tenth image positive), as in a
    /// run directory that has been labelled for a while: the trainer's cost per label at 100,000
    /// labels is measured with `--images 120000 --seed-labels 100000`.
    #[arg(long, default_value_t = 50)]
    seed_labels: usize,
    /// Build each run's folder in DIR/IMAGES-images and keep it (the run directory as the four
    /// processes left it, to look into or to start one of them on again) instead of in a
    /// temporary folder. The folder must not exist yet.
    #[arg(long)]
    keep: Option<PathBuf>,
}

fn synthetic(dir: &Path, n: usize, labels: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("data"))?;
    let rundir = RunDir::create_or_open(&dir.join("run"))?;
    let paths = (0..n).map(|i| format!("synthetic/{i:08}.png")).collect();
    Manifest { datadir: dir.join("data").to_string_lossy().into_owned(), paths, scanned_ms: 0 }.save(&rundir.manifest(), 1)?;
    let dim = binann_model::EMBED_DIM;
    let mut rng = SplitMix64(42);
    let ids: Vec<u32> = (0..n as u32).collect();
    for (index, chunk_ids) in ids.chunks(CHUNK).enumerate() {
        let mut values = Vec::with_capacity(chunk_ids.len() * dim);
        for id in chunk_ids {
            let shift = if id % 10 == 0 { 1.0 } else { 0.0 };
            values.extend((0..dim).map(|d| (rng.next_f64() as f32 - 0.5) + if d < 16 { shift } else { 0.0 }));
        }
        let chunk = EmbeddingChunk {
            ids: chunk_ids.to_vec(),
            dim: dim as u32,
            model: format!("{}@224px", binann_model::BACKBONE_NAME),
            values: EmbeddingChunk::pack(&values),
            failed: Vec::new(),
        };
        chunk.save(&EmbeddingChunk::path(&rundir.embeddings_dir(), 0, 1, index as u32), 1)?;
    }
    // The first `labels` images labelled, in one append.
    anyhow::ensure!(labels < n, "--seed-labels {labels} leaves nothing of {n} images to label");
    let framed: Vec<u8> = (0..labels as u32)
        .flat_map(|id| {
            let label = if id % 10 == 0 { Label::Positive } else { Label::Negative };
            journal::frame(&Record {
                seq: u64::from(id),
                time_ms: binann_core::now_ms(),
                client: "bench".into(),
                annotator: String::new(),
                event: Event::Label { id, label, prob: None },
                audit: None,
            })
        })
        .collect();
    journal::JournalWriter::open::<Record>(&rundir.annotations(), FileKind::Annotations)?.writer.append_framed(&framed)?;
    Ok(())
}

fn ranking_labels(path: &Path) -> Option<u64> {
    Ranking::load(path).ok()?.1.model.map(|m| m.labels_used)
}

/// The processes the bench starts, in the order started.
const PROCESSES: [&str; 4] = ["server", "trainer", "inferrer", "selector"];

fn main() -> std::process::ExitCode {
    binann_core::cli::main("binann-bench-loop", "warn", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let bin_dir: PathBuf = std::env::current_exe()?.parent().expect("in a folder").to_owned();
    println!("binann-bench-loop: head mode, embeddings cached, {} cores", std::thread::available_parallelism().map_or(1, |n| n.get()));
    for &n in &args.images {
        let tmp = tempfile::tempdir()?;
        let folder = match &args.keep {
            Some(dir) => {
                let folder = dir.join(format!("{n}-images"));
                anyhow::ensure!(!folder.exists(), "{} exists already", folder.display());
                folder
            }
            None => tmp.path().to_owned(),
        };
        synthetic(&folder, n, args.seed_labels)?;
        let run = folder.join("run");
        let env = [
            ("BINANN_RUNDIR", run.to_string_lossy().into_owned()),
            ("BINANN_DATADIR", folder.join("data").to_string_lossy().into_owned()),
            ("BINANN_DEVICE", "cpu".to_owned()),
            ("BINANN_MODE", "head".to_owned()),
            // The synthetic embeddings are tagged 224 px; the folder has no images to choose from.
            ("BINANN_INPUT_SIZE", "224".to_owned()),
            ("OMP_WAIT_POLICY", "PASSIVE".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let spawn = |name: &str, extra: &[&str]| -> anyhow::Result<Child> {
            Ok(Command::new(bin_dir.join(name)).args(extra).envs(env.clone()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?)
        };
        let mut server = spawn("binann-server", &["--port", "0", "--rescan", "false"])?;
        let base = server_url(&mut server);
        let mut procs = ChildGroup(vec![server]);
        let base = base.map_err(anyhow::Error::msg)?;
        for name in ["binann-trainer", "binann-inferrer", "binann-selector"] {
            procs.push(spawn(name, &[])?);
        }
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        let mut given = args.seed_labels as u64;
        let label_next = |agent: &ureq::Agent| -> anyhow::Result<()> {
            let next: serde_json::Value = agent.get(&format!("{base}/api/next?count=1")).set("X-Client", "bench").call()?.into_json()?;
            let id = next[0]["id"].as_u64().ok_or_else(|| anyhow::anyhow!("nothing left to label"))?;
            let label = if id % 10 == 0 { "positive" } else { "negative" };
            agent
                .post(&format!("{base}/api/annotations"))
                .set("X-Client", "bench")
                .send_json(serde_json::json!({"id": id, "label": label}))?;
            Ok(())
        };
        let wait_for = |labels: u64, limit: Duration| -> Option<Duration> {
            let started = Instant::now();
            while started.elapsed() < limit {
                if ranking_labels(&run.join("ranking.bin")) == Some(labels) {
                    return Some(started.elapsed());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        };
        // Let the processes warm up on the seed labels.
        let warm = Instant::now();
        wait_for(given, Duration::from_secs(300)).ok_or_else(|| anyhow::anyhow!("no ranking for the seed labels within 300 s"))?;
        let warm_up = warm.elapsed();
        let mut times = Vec::new();
        let cpu_before: Vec<Option<f64>> = procs.0.iter().map(|child| cpu_seconds(child.id())).collect();
        for _ in 0..args.samples {
            label_next(&agent)?;
            given += 1;
            match wait_for(given, Duration::from_secs(60)) {
                Some(t) => times.push(t.as_secs_f64() * 1000.0),
                None => anyhow::bail!("no ranking reflected label {given} within 60 s"),
            }
        }
        let cpu: Vec<Option<f64>> =
            procs.0.iter().zip(&cpu_before).map(|(child, before)| cpu_seconds(child.id()).zip(*before).map(|(a, b)| a - b)).collect();
        times.sort_by(f64::total_cmp);
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1024.0;
        println!(
            "{n} images: annotation acknowledged -> ranking from a checkpoint trained on it: median {:.0} ms, p90 {:.0} ms, max {:.0} ms ({} samples; first ranking after start {:.1} s)",
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            times[times.len() - 1],
            times.len(),
            warm_up.as_secs_f64()
        );
        if let Some(trainer) = cpu[1] {
            println!(
                "  trainer: {:.1} CPU seconds per 100 labels, given one at a time after {} labels",
                trainer * 100.0 / args.samples as f64,
                args.seed_labels
            );
        }
        let per_label: Vec<String> = PROCESSES
            .iter()
            .zip(&cpu)
            .map(|(name, c)| c.map_or(format!("{name} ?"), |c| format!("{name} {:.0}", c * 1000.0 / args.samples as f64)))
            .collect();
        println!("  CPU milliseconds per label: {}", per_label.join(", "));
        for (what, field) in [("resident memory", "VmRSS:"), ("peak resident memory", "VmHWM:")] {
            let mib: Vec<Option<f64>> = procs.0.iter().map(|child| memory_mib(child.id(), field)).collect();
            let each: Vec<String> =
                PROCESSES.iter().zip(&mib).map(|(name, m)| m.map_or(format!("{name} ?"), |m| format!("{name} {m:.0}"))).collect();
            let total: Option<f64> = mib.iter().copied().sum();
            let per_image = total.map_or("?".to_owned(), |t| format!("{:.0}", t * 1024.0 * 1024.0 / n as f64));
            println!("  {what}, MiB: {}; all four {:.0} MiB, {per_image} bytes an image", each.join(", "), total.unwrap_or(f64::NAN));
        }
        println!(
            "  files: predictions {:.0} KiB, ranking {:.0} KiB, checkpoint {:.0} KiB",
            size(&run.join("predictions.bin")),
            size(&run.join("ranking.bin")),
            size(&run.join("checkpoint.safetensors"))
        );
    }
    Ok(())
}

/// A process's memory in MiB from a `/proc/PID/status` field (`VmRSS:` resident now, `VmHWM:` its
/// peak; Linux, None elsewhere).
fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix(field))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat` (Linux; None elsewhere).
/// Its clock ticks are USER_HZ, 100 a second on every Linux architecture binann builds for.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
