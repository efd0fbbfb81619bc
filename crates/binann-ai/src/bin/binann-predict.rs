//! `binann-predict`: take the model with you. `export` writes a self-contained predictor folder
//! from a run directory; `apply` runs an exported predictor on any folder of images.

use binann_core::annotations::Label;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use binann_ai::predictor::{
    self, BACKBONE_FILE, HEAD_FILE, MODEL_FILE, Normalisation, PredictorDescription, PredictorFiles, PredictorMode,
};
use binann_model::{Backbone, FinetuneModel, Head, ModelMeta};
use clap::{Parser, Subcommand};

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
    let (mode, files) = if meta.mode == binann_model::MODE_HEAD {
        // A frozen backbone plus the trained head.
        std::fs::copy(&checkpoint, out.join(HEAD_FILE)).with_context(|| format!("copying {}", checkpoint.display()))?;
        std::fs::copy(weights, out.join(BACKBONE_FILE)).with_context(|| format!("copying the backbone weights {}", weights.display()))?;
        let files =
            PredictorFiles { backbone_weights: Some(BACKBONE_FILE.into()), head_weights: Some(HEAD_FILE.into()), model_weights: None };
        (PredictorMode::Head, files)
    } else {
        // The whole fine-tuned network is in the checkpoint.
        std::fs::copy(&checkpoint, out.join(MODEL_FILE)).with_context(|| format!("copying {}", checkpoint.display()))?;
        (PredictorMode::Finetune, PredictorFiles { model_weights: Some(MODEL_FILE.into()), ..PredictorFiles::default() })
    };
    let description = PredictorDescription {
        format: predictor::FORMAT.into(),
        version: predictor::VERSION,
        backbone: meta.backbone.clone(),
        files,
        mode,
        input_size: meta.input_size,
        normalisation: Normalisation::imagenet(),
        threshold,
        labels_used: meta.labels_used,
        positives: meta.positives,
        checkpoint_generation: meta.generation,
        trained_ms: meta.created_ms,
    };
    // What apply would refuse is refused here, before anyone copies the folder away.
    description.check()?;
    std::fs::write(out.join(predictor::FILE_NAME), description.to_json())?;
    eprintln!(
        "binann-predict: exported the model trained on {} labels ({} positive) to {}",
        meta.labels_used,
        meta.positives,
        out.display()
    );
    Ok(())
}

fn apply(predictor: &Path, images: &Path, out: &Path, device: binann_model::DeviceChoice, batch: usize) -> anyhow::Result<()> {
    let description = PredictorDescription::load(predictor)?;
    let threshold = description.threshold;
    let device = binann_model::resolve_device(device)?;
    let finetuned = description.mode == PredictorMode::Finetune;
    let file = |name: &Option<String>| predictor.join(name.as_deref().expect("checked: the mode's files are named"));
    let rel = binann_core::manifest::list_images(images)?;
    let files: Vec<PathBuf> = rel.iter().map(|r| images.join(r)).collect();
    let bar = binann_ai::progress_bar(files.len() as u64, "predicting");
    // Head mode: embeddings, then the head. Finetune mode: the whole network on the pixels.
    let (results, classify): (Vec<binann_model::EmbedResult>, Classifier) = if finetuned {
        let size = description.input_size;
        // The end-to-end model's own head reads the final map whatever the embedding's name.
        let (model, _) = FinetuneModel::load(&file(&description.files.model_weights), &description.backbone, size, device)?;
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
        let (head, meta): (Head, ModelMeta) = Head::load(&file(&description.files.head_weights), device)?;
        // A predictor exported before the multi-level embedding reads the final map alone.
        let embedding = binann_model::Embedding::from_name(&description.backbone).expect("checked when the description loaded");
        if head.input_width() != embedding.dim() {
            bail!(
                "the head reads {} values per image, but the {} embedding the predictor names has {}",
                head.input_width(),
                description.backbone,
                embedding.dim()
            );
        }
        let backbone = Backbone::load(&file(&description.files.backbone_weights), meta.input_size, device)?.with_embedding(embedding);
        let embeddings = backbone.embed_paths(&files, batch, |done| bar.set_position(done as u64));
        let dim = embedding.dim() as i64;
        (embeddings, Box::new(move |x: &tch::Tensor| head.predict(&x.view([-1, dim]))))
    };
    bar.finish_and_clear();
    let ok: Vec<(usize, Vec<f32>)> = results.iter().enumerate().filter_map(|(i, r)| r.as_ref().ok().map(|v| (i, v.clone()))).collect();
    let mut probs = vec![None; files.len()];
    for chunk in ok.chunks(if finetuned { batch.max(1) } else { 4096 }) {
        let x = tch::Tensor::from_slice(&chunk.iter().flat_map(|(_, v)| v.iter().copied()).collect::<Vec<f32>>());
        let p: Vec<f32> = Vec::try_from(classify(&x).to_device(tch::Device::Cpu))?;
        for ((i, _), p) in chunk.iter().zip(p) {
            probs[*i] = Some(p);
        }
    }
    let sink: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?)
    };
    // The csv crate quotes what needs it: folder and file names may hold commas, quotes and line
    // breaks, and error messages quote paths.
    let mut w = csv::Writer::from_writer(sink);
    w.write_record(["path", "prob", "label", "error"])?;
    let mut failed = 0;
    for (i, r) in rel.iter().enumerate() {
        match (&results[i], probs[i]) {
            (Ok(_), Some(p)) => {
                let label = if f64::from(p) >= threshold { Label::Positive } else { Label::Negative };
                w.write_record([r.as_str(), &format!("{p:.6}"), &label.to_string(), ""])?;
            }
            (Err(e), _) => {
                failed += 1;
                w.write_record([r.as_str(), "", "", &e.to_string()])?;
            }
            (Ok(_), None) => bail!("internal error: no probability for {r}"),
        }
    }
    w.flush()?;
    eprintln!("binann-predict: {} images predicted, {failed} unreadable", rel.len() - failed);
    Ok(())
}
