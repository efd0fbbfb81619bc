//! `binann simulate`: a simulated annotator. It drives the HTTP API exactly as the page does
//! (ask for the next image, answer, repeat), answering from a ground-truth CSV at a set pace, and
//! writes a trace of every step and a summary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use binann_core::annotations::Label;
use binann_core::api::{Acknowledged, AnnotationRequest, Image};

/// Options of `binann simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Ground truth: a CSV with a header and columns path,label (label 1/0 or positive/negative).
    #[arg(long)]
    pub truth: PathBuf,
    /// How many labels to give.
    #[arg(long, default_value_t = 1000)]
    pub labels: usize,
    /// Labels per second (0: as fast as the server answers).
    #[arg(long, default_value_t = 5.0)]
    pub pace: f64,
    /// The client name (X-Client header): whose undo stack the labels go to.
    #[arg(long, default_value = "simulated-annotator")]
    pub client: String,
    /// The annotator name recorded with each label (X-Annotator header).
    #[arg(long, default_value = "simulated-annotator")]
    pub annotator: String,
    /// The server's access token (needed when it listens beyond this machine).
    #[arg(long, env = "BINANN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where to write the trace CSV (step,id,path,truth,prob,time_s).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// One step of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Image id.
    pub id: u64,
    /// Its path.
    pub path: String,
    /// Its true class.
    pub truth: bool,
    /// The model's probability shown with it.
    pub prob: Option<f64>,
    /// Seconds since the simulation started, when the label was acknowledged.
    pub time_s: f64,
}

/// Reads a ground-truth CSV into path → positive?.
pub fn read_truth(path: &Path) -> anyhow::Result<HashMap<String, bool>> {
    Ok(read_truth_rows(path)?.into_iter().map(|(p, positive, _)| (p, positive)).collect())
}

/// Reads a ground-truth CSV (a header naming the columns path and label, and optionally class)
/// into (path, positive?, class) rows. Fields may be quoted, so paths may hold commas.
pub fn read_truth_rows(path: &Path) -> anyhow::Result<Vec<(String, bool, Option<String>)>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers().with_context(|| format!("{}: no header", path.display()))?.clone();
    let column = |name: &str| headers.iter().position(|c| c == name);
    let (Some(pi), Some(li)) = (column("path"), column("label")) else {
        bail!("{}: the header must name the columns path and label, found {:?}", path.display(), headers.iter().collect::<Vec<_>>());
    };
    let ci = column("class");
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: line {}", path.display(), n + 2))?;
        let (Some(p), Some(l)) = (record.get(pi), record.get(li)) else { bail!("{}: line {} has too few columns", path.display(), n + 2) };
        let positive = match l {
            "1" | "positive" | "true" => true,
            "0" | "negative" | "false" => false,
            other => bail!("{}: line {}: label {other:?} is not 1/0 or positive/negative", path.display(), n + 2),
        };
        rows.push((p.to_owned(), positive, ci.and_then(|ci| record.get(ci)).map(str::to_owned)));
    }
    Ok(rows)
}

/// A request with the client's headers, and the token when there is one.
fn authorized(request: ureq::Request, args: &SimulateArgs) -> ureq::Request {
    let request = request.set("X-Client", &args.client);
    match args.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => request.set("Authorization", &format!("Bearer {token}")),
        None => request,
    }
}

/// The annotator's name as the X-Annotator header carries it: UTF-8, percent-encoded (a header
/// value cannot hold most of Unicode).
fn header_safe(name: &str) -> String {
    name.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~ ".contains(&b) { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Runs a simulation; returns its steps.
pub fn simulate(args: &SimulateArgs, truth: &HashMap<String, bool>) -> anyhow::Result<Vec<Step>> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let base = args.url.trim_end_matches('/');
    let interval = if args.pace > 0.0 { Duration::from_secs_f64(1.0 / args.pace) } else { Duration::ZERO };
    let started = Instant::now();
    let mut steps = Vec::with_capacity(args.labels);
    let bar = indicatif::ProgressBar::new(args.labels as u64).with_message("simulated labels");
    while steps.len() < args.labels {
        let due = started + interval * steps.len() as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let next: Vec<Image> = authorized(agent.get(&format!("{base}/api/next?count=1")), args)
            .call()
            .with_context(|| format!("asking {base} for the next image"))?
            .into_json()
            .context("reading /api/next")?;
        let Some(Image { id, path, prob, .. }) = next.into_iter().next() else { break };
        let positive = *truth.get(&path).with_context(|| format!("{path} is not in the truth CSV"))?;
        let label = if positive { Label::Positive } else { Label::Negative };
        let _: Acknowledged = authorized(agent.post(&format!("{base}/api/annotations")), args)
            .set("X-Annotator", &header_safe(&args.annotator))
            .send_json(AnnotationRequest { id, label })
            .with_context(|| format!("labelling image {id}"))?
            .into_json()
            .context("reading the acknowledgement")?;
        steps.push(Step { id: u64::from(id), path, truth: positive, prob: prob.map(f64::from), time_s: started.elapsed().as_secs_f64() });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(steps)
}

/// Writes a trace CSV.
pub fn write_trace(path: &Path, steps: &[Step]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    w.write_record(["step", "id", "path", "truth", "prob", "time_s"])?;
    for (i, s) in steps.iter().enumerate() {
        let prob = s.prob.map(|p| format!("{p:.6}")).unwrap_or_default();
        w.write_record([
            (i + 1).to_string(),
            s.id.to_string(),
            s.path.clone(),
            u8::from(s.truth).to_string(),
            prob,
            format!("{:.3}", s.time_s),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Positives found after each step (cumulative).
pub fn cumulative(steps: &[Step]) -> Vec<usize> {
    steps
        .iter()
        .scan(0, |found, s| {
            *found += usize::from(s.truth);
            Some(*found)
        })
        .collect()
}

/// Runs `binann simulate` and prints the summary as JSON.
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let truth = read_truth(&args.truth)?;
    let steps = simulate(args, &truth)?;
    if let Some(trace) = &args.trace {
        write_trace(trace, &steps)?;
    }
    let total_positives = truth.values().filter(|p| **p).count();
    let found = cumulative(&steps).last().copied().unwrap_or(0);
    let elapsed = steps.last().map_or(0.0, |s| s.time_s);
    println!(
        "{}",
        serde_json::json!({
            "labels": steps.len(),
            "positives_found": found,
            "positives_in_truth": total_positives,
            "recall": if total_positives > 0 { found as f64 / total_positives as f64 } else { 0.0 },
            "elapsed_s": elapsed,
            "labels_per_s": if elapsed > 0.0 { steps.len() as f64 / elapsed } else { 0.0 },
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_paths_may_hold_commas_and_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let csv_path = dir.path().join("truth.csv");
        let mut w = csv::Writer::from_path(&csv_path).unwrap();
        w.write_record(["path", "label", "class"]).unwrap();
        w.write_record(["a,b/IMG \"1\".png", "1", "dress"]).unwrap();
        w.write_record(["plain.png", "negative", "shirt"]).unwrap();
        w.flush().unwrap();
        let rows = read_truth_rows(&csv_path).unwrap();
        assert_eq!(rows[0], ("a,b/IMG \"1\".png".to_owned(), true, Some("dress".to_owned())));
        assert_eq!(rows[1], ("plain.png".to_owned(), false, Some("shirt".to_owned())));
        std::fs::write(&csv_path, "path,label\nx.png,maybe\n").unwrap();
        assert!(read_truth(&csv_path).unwrap_err().to_string().contains("label \"maybe\""));
        std::fs::write(&csv_path, "file,label\n").unwrap();
        assert!(read_truth(&csv_path).unwrap_err().to_string().contains("path and label"));
    }
}
