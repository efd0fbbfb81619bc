//! `binann export`: one row per image with the human label and who gave it, the model's
//! probability and label, and where the final label came from. Human labels always win and are never hidden: the model's
//! opinion stays in its own columns.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use binann_core::RunDirFile;
use binann_core::annotations::{AnnotationState, Label};
use binann_core::manifest::Manifest;
use binann_core::rundir::RunDir;

/// Options of `binann export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The run directory.
    #[arg(long, env = "BINANN_RUNDIR")]
    rundir: PathBuf,
    /// Output file; `.jsonl` gives JSON Lines, anything else CSV ("-": CSV on stdout).
    #[arg(long)]
    out: PathBuf,
    /// Probability at or above which the model's label is positive.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Label the rest: give unlabelled images the model's label, but only where it is confident:
    /// positive at or above --positive-above, negative at or below --negative-below; the
    /// uncertain ones in between stay unlabelled.
    #[arg(long)]
    label_rest: bool,
    /// With --label-rest: the lowest probability labelled positive (default: --threshold).
    #[arg(long)]
    positive_above: Option<f64>,
    /// With --label-rest: the highest probability labelled negative (default: everything below
    /// --positive-above, so no image is left uncertain).
    #[arg(long)]
    negative_below: Option<f64>,
}

/// One exported row.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Row {
    /// Image id.
    pub id: u32,
    /// Path relative to the dataset folder.
    pub path: String,
    /// The person's label: positive, negative, skip, or empty.
    pub human_label: Option<Label>,
    /// The name of the person who gave `human_label` (empty when there is none, or when they gave
    /// no name).
    pub annotator: String,
    /// The model's probability, if it predicted this image.
    pub model_prob: Option<f32>,
    /// The model's label at the threshold.
    pub model_label: Option<Label>,
    /// The label to use: the human's if any, else (when labelling the rest, and confident) the model's.
    pub label: Option<Label>,
    /// Where `label` came from: human, model, or none.
    pub label_source: &'static str,
}

fn check_probability(name: &str, v: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&v) || v.is_nan() {
        bail!("{name} must be a probability between 0 and 1, got {v}");
    }
    Ok(())
}

/// Builds the rows of an export.
pub fn rows(rundir: &Path, args: &ExportArgs) -> anyhow::Result<Vec<Row>> {
    check_probability("--threshold", args.threshold)?;
    let positive_above = args.positive_above.unwrap_or(args.threshold);
    check_probability("--positive-above", positive_above)?;
    if let Some(negative_below) = args.negative_below {
        check_probability("--negative-below", negative_below)?;
        if negative_below >= positive_above {
            bail!("--negative-below ({negative_below}) must be below --positive-above ({positive_above})");
        }
    }
    // Without --negative-below, everything under the positive cut is negative: no uncertain band.
    let is_negative = |p: f64| args.negative_below.map_or(p < positive_above, |n| p <= n);
    let rd = RunDir::open_existing(rundir);
    let (_, manifest) = Manifest::load(&rd.manifest()).context("reading the manifest")?;
    let annotations = AnnotationState::load(&rd.annotations()).context("reading the annotations")?;
    let merged = binann_core::predictions::merge(&binann_core::predictions::files(rd.root()));
    for p in &merged.problems {
        eprintln!("binann export: warning: {p}");
    }
    let mut prob = vec![None; manifest.len()];
    for (id, logit) in merged.ids.iter().zip(&merged.logits) {
        if let Some(slot) = prob.get_mut(*id as usize) {
            *slot = Some(binann_core::predictions::probability(*logit));
        }
    }
    let mut out = Vec::with_capacity(manifest.len());
    for (id, path) in manifest.paths.iter().enumerate() {
        let id = id as u32;
        let effective = annotations.get(id);
        let human = effective.map(|e| e.label);
        let annotator = effective.map(|e| annotations.annotator_name(e.annotator).to_owned()).unwrap_or_default();
        let model_prob = prob[id as usize];
        let model_label = model_prob.map(|p| if f64::from(p) >= args.threshold { Label::Positive } else { Label::Negative });
        let (label, label_source) = match human {
            Some(Label::Skip) | None => {
                let confident = model_prob.and_then(|p| {
                    let p = f64::from(p);
                    if p >= positive_above {
                        Some(Label::Positive)
                    } else if is_negative(p) {
                        Some(Label::Negative)
                    } else {
                        None
                    }
                });
                match confident {
                    Some(l) if args.label_rest => (Some(l), "model"),
                    _ => (None, "none"),
                }
            }
            Some(l) => (Some(l), "human"),
        };
        out.push(Row { id, path: path.to_owned(), human_label: human, annotator, model_prob, model_label, label, label_source });
    }
    Ok(out)
}

/// Runs `binann export`.
pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let rows = rows(&args.rundir, args)?;
    let stdout = args.out.as_os_str() == "-";
    let mut w: Box<dyn Write> = if stdout {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?))
    };
    let jsonl = !stdout && args.out.extension().is_some_and(|e| e == "jsonl");
    if jsonl {
        for r in &rows {
            serde_json::to_writer(&mut w, r)?;
            writeln!(w)?;
        }
    } else {
        let mut csv = csv::Writer::from_writer(&mut w);
        csv.write_record(["id", "path", "human_label", "annotator", "model_prob", "model_label", "label", "label_source"])?;
        for r in &rows {
            csv.write_record([
                r.id.to_string().as_str(),
                &r.path,
                &r.human_label.map(|l| l.to_string()).unwrap_or_default(),
                &r.annotator,
                &r.model_prob.map(|p| format!("{p:.6}")).unwrap_or_default(),
                &r.model_label.map(|l| l.to_string()).unwrap_or_default(),
                &r.label.map(|l| l.to_string()).unwrap_or_default(),
                r.label_source,
            ])?;
        }
        csv.flush()?;
    }
    w.flush()?;
    let human = rows.iter().filter(|r| r.label_source == "human").count();
    let model = rows.iter().filter(|r| r.label_source == "model").count();
    if !stdout {
        eprintln!(
            "binann export: {} images to {}: {human} labelled by a person, {model} by the model, {} unlabelled",
            rows.len(),
            args.out.display(),
            rows.len() - human - model
        );
        // Beside the rows, what they add up to, with the estimate of the positives the person has
        // not labelled (see `binann_core::estimate`): `labels.csv` → `labels.csv.summary.json`.
        let annotations = AnnotationState::load(&RunDir::open_existing(&args.rundir).annotations())?;
        let left = annotations.positives_left(rows.len() as u64);
        if let Some(l) = &left {
            // "not known yet" until the estimate can guide a decision (`PositivesLeft::known`).
            eprintln!("binann export: {}", l.summary());
        }
        let summary = serde_json::json!({
            "images": rows.len(),
            "labelled_by_person": human,
            "labelled_by_model": model,
            "unlabelled": rows.len() - human - model,
            "positives_left": left,
        });
        let mut name = args.out.as_os_str().to_owned();
        name.push(".summary.json");
        std::fs::write(&name, serde_json::to_string_pretty(&summary)?).with_context(|| format!("writing {}", name.display()))?;
    }
    Ok(())
}
