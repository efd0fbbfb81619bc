//! The four processes on flat folders of short-named images at several sizes, as a new user's
//! folders look (`0.png` ... or `000000.png` ...): each must get a checkpoint, predictions and a
//! ranking from the model, and the server must restart on the run directory and resume with every
//! label. (At 4,000 and 20,000 images a decode limit once locked the AI out and, after a restart,
//! the server too.)
//!
//! Needs `scripts/setup.sh` (the ImageNet weights in `.cache/`).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::annotations::AnnotationState;
use binann_core::manifest::Manifest;
use binann_core::predictions::Predictions;
use binann_core::ranking::Ranking;
use binann_testkit::{ChildGroup, server_url};
use common::{bin, weights};

/// Every tenth image is bright (the positives), the rest dark: a few encoded PNGs written over and
/// over, so that 20,000 files take a second.
fn write_folder(dir: &Path, count: usize, name: impl Fn(usize) -> String) {
    std::fs::create_dir_all(dir).unwrap();
    let png = |level: u8| {
        let img = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([level.saturating_add(((x * y) % 7) as u8)]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    };
    let variants: Vec<Vec<u8>> = (0..8).map(|k| png(if k == 0 { 230 } else { 10 + 8 * k })).collect();
    for i in 0..count {
        let variant = if is_positive(i) { 0 } else { 1 + i % 7 };
        std::fs::write(dir.join(name(i)), &variants[variant]).unwrap();
    }
}

fn is_positive(index: usize) -> bool {
    index.is_multiple_of(10)
}

struct Folder {
    count: usize,
    name: fn(usize) -> String,
    /// `BINANN_INPUT_SIZE`, or None to leave it to binann (chosen from the images' 16-px sides).
    input_size: Option<u32>,
}

fn start_server(env: &[(&str, String)]) -> (Child, String) {
    let mut server = Command::new(bin("binann-server"))
        .args(["--port", "0"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = server_url(&mut server).unwrap();
    (server, url)
}

fn run_folder(folder: &Folder) {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    write_folder(&data, folder.count, folder.name);
    let mut env: Vec<(&str, String)> = vec![
        ("BINANN_RUNDIR", run.display().to_string()),
        ("BINANN_DATADIR", data.display().to_string()),
        ("BINANN_WEIGHTS", weights().display().to_string()),
        ("BINANN_DEVICE", "cpu".into()),
        ("OMP_WAIT_POLICY", "PASSIVE".into()),
        ("BINANN_POLL_MS", "200".into()),
        ("RUST_LOG", "warn".into()),
    ];
    if let Some(px) = folder.input_size {
        env.push(("BINANN_INPUT_SIZE", px.to_string()));
    }
    let (server, base) = start_server(&env);
    let ai = |name: &str| {
        Command::new(bin(name)).envs(env.iter().map(|(k, v)| (k, v))).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap()
    };
    let mut procs = ChildGroup(vec![server, ai("binann-trainer"), ai("binann-inferrer"), ai("binann-selector")]);

    let (_, manifest) = Manifest::load(&run.join("manifest.bin")).expect("the manifest reads back");
    assert_eq!(manifest.len(), folder.count);
    let index_of = |id: u32| -> usize { manifest.paths[id as usize].trim_end_matches(".png").parse().unwrap() };

    // Label what the server hands out first, as a person would, until there is a positive and a
    // negative (at most 30 labels: a tenth of the images are positive).
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let (mut positives, mut negatives) = (0, 0);
    while (positives == 0 || negatives == 0) && positives + negatives < 30 {
        let next: Vec<serde_json::Value> =
            agent.get(&format!("{base}/api/next?count=1")).set("X-Client", "person").call().unwrap().into_json().unwrap();
        let Some(item) = next.first() else { break };
        let id = item["id"].as_u64().unwrap() as u32;
        let positive = is_positive(index_of(id)) || (positives == 0 && positives + negatives == 29);
        let label = if positive { "positive" } else { "negative" };
        let r = agent
            .post(&format!("{base}/api/annotations"))
            .set("X-Client", "person")
            .send_json(serde_json::json!({"id": id, "label": label}))
            .unwrap();
        assert_eq!(r.status(), 200);
        if positive { positives += 1 } else { negatives += 1 }
    }
    let labels = positives + negatives;
    assert!(positives > 0 && negatives > 0, "{} images: no positive and negative among the first 30", folder.count);

    // The AI's three files, each from a model trained on those labels.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let checkpoint = run.join("checkpoint.safetensors").exists();
        let predictions =
            Predictions::load(&run.join("predictions.bin")).ok().filter(|(_, p)| p.model.labels_used == labels as u64 && !p.ids.is_empty());
        let ranking = Ranking::load(&run.join("ranking.bin")).ok().filter(|(_, r)| {
            r.model.as_ref().is_some_and(|m| m.labels_used == labels as u64)
                && r.predicted > 0
                && r.ids.iter().all(|id| (*id as usize) < folder.count)
        });
        if let (true, Some(_), Some((_, ranking))) = (checkpoint, &predictions, &ranking) {
            // Without a setting, 16-px images get the smallest automatic input, not the backbone's 224.
            let used = ranking.model.as_ref().map(|m| m.input_size);
            assert_eq!(
                used,
                Some(folder.input_size.unwrap_or(binann_model::preprocess::AUTO_INPUT_MIN)),
                "{} images: input size",
                folder.count
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} images: within 5 minutes, checkpoint {checkpoint}, predictions {}, ranking {}",
            folder.count,
            predictions.is_some(),
            ranking.is_some()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for file in ["manifest.bin", "ranking.bin", "predictions.bin", "annotations.journal"] {
        let out = Command::new(bin("binann")).arg("inspect").arg(run.join(file)).stdout(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "binann inspect {file}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Restart the server alone on the run directory: it resumes with every label.
    let server = &mut procs.0[0];
    server.kill().unwrap();
    server.wait().unwrap();
    let (server, base) = start_server(&env);
    procs.0[0] = server;
    let stats: serde_json::Value = agent.get(&format!("{base}/api/stats")).call().unwrap().into_json().unwrap();
    assert_eq!(stats["total"].as_u64(), Some(folder.count as u64), "{stats}");
    assert_eq!(stats["positives"].as_u64(), Some(positives as u64), "{stats}");
    assert_eq!(stats["negatives"].as_u64(), Some(negatives as u64), "{stats}");
    let state = AnnotationState::load(&run.join("annotations.journal")).unwrap();
    let next: Vec<serde_json::Value> =
        agent.get(&format!("{base}/api/next?count=4")).set("X-Client", "person").call().unwrap().into_json().unwrap();
    assert_eq!(next.len(), 4.min(folder.count - labels));
    for item in &next {
        assert!(!state.is_done(item["id"].as_u64().unwrap() as u32), "a labelled image was handed out again after the restart: {item}");
    }
    let r = agent
        .post(&format!("{base}/api/annotations"))
        .set("X-Client", "person")
        .send_json(serde_json::json!({"id": next[0]["id"], "label": "negative"}))
        .unwrap();
    assert_eq!(r.status(), 200, "labelling after the restart");
}

#[test]
fn the_ai_runs_and_the_server_resumes_on_folders_of_several_sizes() {
    let folders = [
        Folder { count: 40, name: |i| format!("{i}.png"), input_size: None },
        Folder { count: 4_000, name: |i| format!("{i:06}.png"), input_size: Some(32) },
        Folder { count: 5_000, name: |i| format!("{i}.png"), input_size: Some(32) },
        Folder { count: 20_000, name: |i| format!("{i:06}.png"), input_size: Some(32) },
    ];
    for folder in &folders {
        let started = Instant::now();
        run_folder(folder);
        println!("{} images: AI files and a resumed server in {:.1} s", folder.count, started.elapsed().as_secs_f64());
    }
}

/// A label of an image the manifest does not list (a journal from another run directory) is left
/// out with a warning; the trainer trains on the rest instead of stopping every process.
#[test]
fn a_label_beyond_the_manifest_is_left_out_not_a_crash() {
    use binann_core::annotations::{Event, Label, Record};
    use binann_core::codec::FileKind;
    use binann_core::journal::{self, JournalWriter};
    use binann_core::rundir::RunDir;

    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    write_folder(&data, 20, |i| format!("{i}.png"));
    let rundir = RunDir::create_or_open(&run).unwrap();
    let (manifest, _) = Manifest::scan(&data, None).unwrap();
    manifest.save(&rundir.manifest(), 1).unwrap();
    let mut writer = JournalWriter::open::<Record>(&rundir.annotations(), FileKind::Annotations).unwrap().writer;
    let labels = [(0, Label::Positive), (1, Label::Negative), (2, Label::Negative), (20, Label::Positive), (4_000_000, Label::Negative)];
    for (seq, (id, label)) in labels.into_iter().enumerate() {
        let r = Record {
            audit: None,
            seq: seq as u64,
            time_ms: 0,
            client: "t".into(),
            annotator: String::new(),
            event: Event::Label { id, label, prob: None },
        };
        writer.append_framed(&journal::frame(&r)).unwrap();
    }
    drop(writer);
    let out = Command::new(bin("binann-trainer"))
        .arg("--once")
        .env("BINANN_RUNDIR", &run)
        .env("BINANN_DATADIR", &data)
        .env("BINANN_WEIGHTS", weights())
        .env("BINANN_INPUT_SIZE", "32")
        .env("BINANN_DEVICE", "cpu")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the trainer failed: {stderr}");
    assert!(stderr.contains("leaving out labels of images the manifest does not list"), "{stderr}");
    let meta = binann_model::checkpoint::read_meta(&run.join("checkpoint.safetensors")).expect("a checkpoint from the three listed labels");
    assert_eq!((meta.labels_used, meta.positives), (3, 1));
}
