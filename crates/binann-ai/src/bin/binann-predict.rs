//! `binann-predict`: take the model with you. `export` writes a self-contained predictor folder
//! from a run directory; `apply` runs an exported predictor on any folder of images.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use binann_model::{Backbone, FullModel, Head, ModelMeta};
use clap::{Parser, Subcommand};
use serde_json::json;

/// Exports binann's model as a self-contained predictor, and applies one to a folder of images.
#[derive(Debug, Parser)]
#[command(name = "binann-predict", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write a predictor folder: weights (safetensors; head mode: backbone + head, finetune mode:
    /// the whole network) and predictor.json (backbone, input size, normalisation, threshold, the
    /// labels it was trained on).
    Export {
        /// The run directory whose checkpoint to export.
        #[arg(long, env = "BINANN_RUNDIR")]
        rundir: PathBuf,
        /// The folder to create.
        #[arg(long)]
        out: PathBuf,
        /// Probability at or above which `apply` says positive.
        #[arg(long, default_value_t = 0.5)]
        threshold: f64,
        /// The backbone weights used by the run (head mode copies them into the predictor).
        #[arg(long, env = "BINANN_WEIGHTS", default_value = binann_model::DEFAULT_WEIGHTS_PATH)]
        weights: PathBuf,
    },
    /// Predict every image of a folder with an exported predictor; writes path,prob,label,error.
    Apply {
        /// The predictor folder made by `export`.
        #[arg(long)]
        predictor: PathBuf,
        /// The folder of images (searched recursively).
        #[arg(long)]
        images: PathBuf,
        /// Output CSV ("-": stdout).
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, env = "BINANN_DEVICE", default_value = "auto")]
        device: binann_model::DeviceChoice,
        /// Images per batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
}

const HEAD_FILE: &str = "head.safetensors";
const BACKBONE_FILE: &str = "backbone.safetensors";
const MODEL_FILE: &str = "model.safetensors";
const META_FILE: &str = "predictor.json";

/// Turns a batch of embeddings or pixels into probabilities.
type Classifier = Box<dyn Fn(&tch::Tensor) -> tch::Tensor>;

fn main() -> std::process::ExitCode {
    binann_model::with_cpu_runtime_env();
    binann_core::cli::main("binann-predict", "info", || match Cli::parse().command {
        Cmd::Export { rundir, out, threshold, weights } => export(&rundir, &out, threshold, &weights),
        Cmd::Apply { predictor, images, out, device, batch } => apply(&predictor, &images, &out, device, batch),
    })
}

fn export(rundir: &Path, out: &Path, threshold: f64, weights: &Path) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&threshold) {
        bail!("--threshold must be a probability between 0 and 1, got {threshold}");
    }
    let checkpoint = binann_core::rundir::RunDir::open_existing(rundir).checkpoint();
    let meta = binann_model::checkpoint::read_meta(&checkpoint)
        .context("no model to export yet (the trainer writes one after the first positive and negative labels)")?;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} exists and is not empty", out.display());
    }
    std::fs::create_dir_all(out)?;
    let files = if meta.mode == binann_model::MODE_HEAD {
        // A frozen backbone plus the trained head.
        std::fs::copy(&checkpoint, out.join(HEAD_FILE)).with_context(|| format!("copying {}", checkpoint.display()))?;
        std::fs::copy(weights, out.join(BACKBONE_FILE)).with_context(|| format!("copying the backbone weights {}", weights.display()))?;
        json!({ "backbone_weights": BACKBONE_FILE, "head_weights": HEAD_FILE })
    } else {
        // The whole fine-tuned network is in the checkpoint.
        std::fs::copy(&checkpoint, out.join(MODEL_FILE)).with_context(|| format!("copying {}", checkpoint.display()))?;
        json!({ "model_weights": MODEL_FILE })
    };
    let description = json!({
        "format": "binann-predictor",
        "version": 1,
        "backbone": meta.backbone,
        "files": files,
        "mode": meta.mode,
        "input_size": meta.input_size,
        "normalisation": { "mean": binann_model::preprocess::IMAGENET_MEAN, "std": binann_model::preprocess::IMAGENET_STD, "color": "RGB, grayscale replicated" },
        "threshold": threshold,
        "labels_used": meta.labels_used,
        "positives": meta.positives,
        "checkpoint_generation": meta.generation,
        "trained_ms": meta.created_ms,
    });
    std::fs::write(out.join(META_FILE), serde_json::to_string_pretty(&description)?)?;
    eprintln!(
        "binann-predict: exported the model trained on {} labels ({} positive) to {}",
        meta.labels_used,
        meta.positives,
        out.display()
    );
    Ok(())
}

fn apply(predictor: &Path, images: &Path, out: &Path, device: binann_model::DeviceChoice, batch: usize) -> anyhow::Result<()> {
    let description: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(predictor.join(META_FILE))
            .with_context(|| format!("{} is not a binann predictor folder", predictor.display()))?,
    )?;
    if description["format"] != "binann-predictor" {
        bail!("{} is not a binann predictor", predictor.join(META_FILE).display());
    }
    let threshold = description["threshold"].as_f64().context("no threshold")?;
    let device = binann_model::resolve_device(device)?;
    let finetuned = description["mode"] == binann_model::MODE_FINETUNE;
    let rel = binann_core::manifest::list_images(images)?;
    let files: Vec<PathBuf> = rel.iter().map(|r| images.join(r)).collect();
    let bar = binann_ai::progress_bar(files.len() as u64, "predicting");
    // Head mode: embeddings, then the head. Finetune mode: the whole network on the pixels.
    let (results, classify): (Vec<binann_model::EmbedResult>, Classifier) = if finetuned {
        let size = description["input_size"].as_u64().context("no input_size")? as u32;
        let (model, _) = FullModel::load(&predictor.join(MODEL_FILE), binann_model::BACKBONE_NAME, size, device)?;
        let preprocess = binann_model::Preprocess { size };
        let pixels = files
            .iter()
            .map(|f| {
                bar.inc(1);
                preprocess.load_image(f)
            })
            .collect();
        let s = i64::from(size);
        (pixels, Box::new(move |x: &tch::Tensor| model.predict(&x.view([-1, 3, s, s]))))
    } else {
        let (head, meta): (Head, ModelMeta) = Head::load(&predictor.join(HEAD_FILE), device)?;
        let backbone = Backbone::load(&predictor.join(BACKBONE_FILE), meta.input_size, device)?;
        let embeddings = backbone.embed_paths(&files, batch, |done| bar.set_position(done as u64));
        let dim = binann_model::EMBED_DIM as i64;
        (embeddings, Box::new(move |x: &tch::Tensor| head.predict(&x.view([-1, dim]))))
    };
    bar.finish_and_clear();
    let mut w: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?))
    };
    writeln!(w, "path,prob,label,error")?;
    let ok: Vec<(usize, Vec<f32>)> = results.iter().enumerate().filter_map(|(i, r)| r.as_ref().ok().map(|v| (i, v.clone()))).collect();
    let mut probs = vec![None; files.len()];
    for chunk in ok.chunks(if finetuned { batch.max(1) } else { 4096 }) {
        let x = tch::Tensor::from_slice(&chunk.iter().flat_map(|(_, v)| v.iter().copied()).collect::<Vec<f32>>());
        let p: Vec<f32> = Vec::try_from(classify(&x).to_device(tch::Device::Cpu))?;
        for ((i, _), p) in chunk.iter().zip(p) {
            probs[*i] = Some(p);
        }
    }
    let mut failed = 0;
    for (i, r) in rel.iter().enumerate() {
        let path = if r.contains([',', '"']) { format!("\"{}\"", r.replace('"', "\"\"")) } else { r.clone() };
        match (&results[i], probs[i]) {
            (Ok(_), Some(p)) => writeln!(w, "{path},{p:.6},{},", if f64::from(p) >= threshold { "positive" } else { "negative" })?,
            (Err(e), _) => {
                failed += 1;
                writeln!(w, "{path},,,\"{}\"", e.to_string().replace('"', "'"))?
            }
            (Ok(_), None) => bail!("internal error: no probability for {r}"),
        }
    }
    w.flush()?;
    eprintln!("binann-predict: {} images predicted, {failed} unreadable", rel.len() - failed);
    Ok(())
}
