//! `binann bench-recall`: does the AI speed labelling up? A simulated annotator labels the demo
//! dataset twice through the real server, once with the AI running and once without (the fixed-seed
//! shuffle: the random baseline), and the positives found are compared with the oracle (all
//! positives first). Prints the figures and draws the recall curves as SVG.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use binann_core::process::{ChildGroup, server_url};
use plotters::prelude::*;

use crate::simulate::{SimulateArgs, Step, cumulative, read_truth, simulate, write_trace};

/// Options of `binann bench-recall`.
#[derive(Debug, clap::Args)]
pub struct RecallArgs {
    /// Folder with the Fashion-MNIST .gz files (scripts/setup.sh fetches them).
    #[arg(long, default_value = ".cache/fashion-mnist")]
    source: PathBuf,
    /// Images in the dataset.
    #[arg(long, default_value_t = 5000)]
    count: usize,
    /// The positive class (see `binann demo-data --help`).
    #[arg(long, default_value = "sneaker")]
    positive: String,
    /// Labels the simulated annotator gives.
    #[arg(long, default_value_t = 1000)]
    labels: usize,
    /// Its pace with the AI running, in labels per second.
    #[arg(long, default_value_t = 5.0)]
    pace: f64,
    /// Network input size for the AI (28×28 images need little).
    #[arg(long, default_value_t = 96)]
    input_size: u32,
    /// Folder for the dataset, traces, and the plot (recall.svg).
    #[arg(long, default_value = "bench-out/recall")]
    out: PathBuf,
}

fn start(bin: &Path, names: &[&str], env: &[(&str, String)]) -> anyhow::Result<(String, ChildGroup)> {
    let mut procs = ChildGroup::default();
    let mut server = Command::new(bin.join("binann-server"))
        .args(["--port", "0"])
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting binann-server")?;
    let url = server_url(&mut server).map_err(anyhow::Error::msg);
    procs.push(server);
    let url = url?;
    for name in names {
        let child = Command::new(bin.join(name))
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name} (build it: cargo build --release --workspace)"))?;
        procs.push(child);
    }
    Ok((url, procs))
}

/// Runs the benchmark.
pub fn run(args: &RecallArgs) -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.parent().context("no folder")?.to_owned();
    std::fs::create_dir_all(&args.out)?;
    let data = args.out.join("data");
    let truth_csv = args.out.join("truth.csv");
    if !data.exists() {
        let status = Command::new(bin.join("binann"))
            .args(["demo-data", "--count", &args.count.to_string(), "--positive", &args.positive])
            .arg("--source")
            .arg(&args.source)
            .arg("--out")
            .arg(&data)
            .arg("--truth")
            .arg(&truth_csv)
            .status()?;
        if !status.success() {
            bail!("writing the demo dataset failed");
        }
    }
    let truth = read_truth(&truth_csv)?;
    let positives = truth.values().filter(|p| **p).count();
    let weights = std::path::absolute(".cache/weights/mobilenet_v2.safetensors")?;
    let mut runs: Vec<(&str, Vec<Step>)> = Vec::new();
    for (name, ai) in [("with AI", true), ("random order", false)] {
        let rundir = args.out.join(if ai { "run-ai" } else { "run-random" });
        if rundir.exists() {
            std::fs::remove_dir_all(&rundir)?;
        }
        let env = [
            ("BINANN_DATADIR", data.to_string_lossy().into_owned()),
            ("BINANN_RUNDIR", rundir.to_string_lossy().into_owned()),
            ("BINANN_INPUT_SIZE", args.input_size.to_string()),
            ("BINANN_WEIGHTS", std::env::var("BINANN_WEIGHTS").unwrap_or_else(|_| weights.to_string_lossy().into_owned())),
            ("RUST_LOG", "warn".to_owned()),
            ("OMP_WAIT_POLICY", "PASSIVE".to_owned()),
        ];
        let ai_procs: &[&str] = if ai { &["binann-trainer", "binann-inferrer", "binann-selector"] } else { &[] };
        let (url, procs) = start(&bin, ai_procs, &env)?;
        eprintln!("{name}: {} labels at {} labels/s on {url}", args.labels, if ai { args.pace } else { 0.0 });
        let sim = SimulateArgs {
            url,
            truth: truth_csv.clone(),
            labels: args.labels,
            // Without the AI the order is fixed: pace changes nothing, so do not wait.
            pace: if ai { args.pace } else { 0.0 },
            client: "bench-recall".into(),
            annotator: "bench-recall".into(),
            token: None,
            trace: None,
        };
        let steps = simulate(&sim, &truth)?;
        drop(procs);
        write_trace(&args.out.join(format!("trace-{}.csv", if ai { "ai" } else { "random" })), &steps)?;
        runs.push((name, steps));
    }
    let curves: Vec<(&str, Vec<usize>)> = runs.iter().map(|(n, s)| (*n, cumulative(s))).collect();
    let oracle: Vec<usize> = (1..=args.labels).map(|n| n.min(positives)).collect();

    println!(
        "dataset: {} Fashion-MNIST images, positive class {:?}: {positives} positives ({:.1} %)",
        truth.len(),
        args.positive,
        100.0 * positives as f64 / truth.len() as f64
    );
    println!("positives found after n labels (recall):");
    println!("{:>8} {:>16} {:>16} {:>16}", "n", "with AI", "random order", "oracle");
    let mut checkpoints: Vec<usize> = [50, 100, 200, 300, 500, 750, 1000, 1500, 2000].into_iter().filter(|n| *n <= args.labels).collect();
    if checkpoints.last() != Some(&args.labels) {
        checkpoints.push(args.labels);
    }
    let cell = |c: &[usize], n: usize| {
        let found = c.get(n - 1).or(c.last()).copied().unwrap_or(0);
        format!("{found} ({:.0} %)", 100.0 * found as f64 / positives.max(1) as f64)
    };
    for n in checkpoints {
        println!("{n:>8} {:>16} {:>16} {:>16}", cell(&curves[0].1, n), cell(&curves[1].1, n), cell(&oracle, n));
    }
    if args.labels >= 2 * positives {
        println!(
            "recall after 2 x {positives} = {} labels: with AI {}, random order {}",
            2 * positives,
            cell(&curves[0].1, 2 * positives),
            cell(&curves[1].1, 2 * positives)
        );
    }
    let elapsed = runs[0].1.last().map_or(0.0, |s| s.time_s);
    println!("with AI: {} labels in {elapsed:.0} s ({:.2} labels/s)", runs[0].1.len(), runs[0].1.len() as f64 / elapsed.max(1e-9));
    let svg = args.out.join("recall.svg");
    plot(&svg, positives, &curves, &oracle)?;
    println!("recall curves: {}", svg.display());
    Ok(())
}

fn plot(path: &Path, positives: usize, curves: &[(&str, Vec<usize>)], oracle: &[usize]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = oracle.len();
    let mut chart = ChartBuilder::on(&root)
        .caption("binann: positives found versus labels given", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0usize..n, 0f64..1.0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.configure_mesh().x_desc("labels given").y_desc("recall (share of positives found)").draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = positives.max(1) as f64;
    let series: Vec<(&str, &[usize], RGBColor)> = vec![
        ("oracle (all positives first)", oracle, RGBColor(150, 150, 150)),
        (curves[0].0, &curves[0].1, RGBColor(30, 120, 220)),
        (curves[1].0, &curves[1].1, RGBColor(220, 80, 40)),
    ];
    for (name, values, color) in series {
        chart
            .draw_series(LineSeries::new(values.iter().enumerate().map(|(i, v)| (i + 1, *v as f64 / p)), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
