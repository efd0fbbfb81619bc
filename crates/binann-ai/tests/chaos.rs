//! Chaos: the four processes run on real images while a driver labels through the API and a
//! killer SIGKILLs a random process every second or two and restarts it. Afterwards every
//! acknowledged annotation is present, every run-directory file decodes, and the loop still
//! produces a ranking from a model trained on all labels. Every process polls (as on a network
//! disk). Short form for CI; BINANN_CHAOS_SECS=600 makes it long. Needs `scripts/setup.sh`.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::annotations::{AnnotationState, Label};
use binann_core::ranking::{Ranking, SplitMix64};
use common::{bin, weights, workspace};

struct Fleet {
    env: Vec<(String, String)>,
    port: u16,
    children: Vec<(&'static str, Child)>,
}

impl Fleet {
    fn spawn(&self, name: &'static str) -> Child {
        let mut cmd = Command::new(bin(name));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v))).stderr(Stdio::null());
        if name == "binann-server" {
            let mut child = cmd.args(["--port", &self.port.to_string()]).stdout(Stdio::piped()).spawn().unwrap();
            binann_testkit::server_url(&mut child).unwrap();
            child
        } else {
            cmd.stdout(Stdio::null()).spawn().unwrap()
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn kill_9_at_random_loses_nothing_and_the_loop_recovers() {
    let root = workspace();
    let weights = weights();
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    let out = Command::new(bin("binann"))
        .args(["demo-data", "--count", "600", "--positive", "shoe"])
        .arg("--source")
        .arg(root.join(".cache/fashion-mnist"))
        .arg("--out")
        .arg(&data)
        .arg("--truth")
        .arg(tmp.path().join("truth.csv"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let truth: HashMap<String, bool> = std::fs::read_to_string(tmp.path().join("truth.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[1] == "1")
        })
        .collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env: Vec<(String, String)> = [
        ("BINANN_RUNDIR", run.to_str().unwrap()),
        ("BINANN_DATADIR", data.to_str().unwrap()),
        ("BINANN_WEIGHTS", weights.to_str().unwrap()),
        ("BINANN_INPUT_SIZE", "64"),
        ("BINANN_DEVICE", "cpu"),
        ("OMP_WAIT_POLICY", "PASSIVE"),
        // As on a network disk shared between machines: no file events, polling only.
        ("BINANN_FORCE_POLLING", "true"),
        ("BINANN_POLL_MS", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut fleet = Fleet { env, port, children: Vec::new() };
    for name in ["binann-server", "binann-trainer", "binann-inferrer", "binann-selector"] {
        let child = fleet.spawn(name);
        fleet.children.push((name, child));
    }
    let base = format!("http://127.0.0.1:{port}");
    // (id, positive?, seq) of every acknowledged label, and the ids handed out again after that.
    let acked: Arc<Mutex<Vec<(u32, bool, u64)>>> = Arc::default();
    let handed_again: Arc<Mutex<Vec<u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (acked, handed_again, stop, base, truth) = (acked.clone(), handed_again.clone(), stop.clone(), base.clone(), truth.clone());
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
            while !stop.load(Ordering::Relaxed) {
                let next = agent
                    .get(&format!("{base}/api/next?count=1"))
                    .set("X-Client", "chaos")
                    .call()
                    .ok()
                    .and_then(|r| r.into_json::<serde_json::Value>().ok());
                let Some(item) = next.as_ref().and_then(|v| v.get(0)) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let id = item["id"].as_u64().unwrap() as u32;
                if acked.lock().unwrap().iter().any(|(done, _, _)| *done == id) {
                    handed_again.lock().unwrap().push(id);
                }
                let positive = truth[item["path"].as_str().unwrap()];
                let sent = agent
                    .post(&format!("{base}/api/annotations"))
                    .set("X-Client", "chaos")
                    .send_json(serde_json::json!({"id": id, "label": if positive { "positive" } else { "negative" }}));
                if let Ok(r) = sent
                    && r.status() == 200
                    && let Ok(body) = r.into_json::<serde_json::Value>()
                {
                    acked.lock().unwrap().push((id, positive, body["seq"].as_u64().expect("an acknowledgement names its seq")));
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let secs: u64 = std::env::var("BINANN_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let started = Instant::now();
    let mut rng = SplitMix64(0xC4A05);
    let mut kills: HashMap<&str, usize> = HashMap::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(1000 + rng.next_u64() % 1000));
        let victim = (rng.next_u64() % fleet.children.len() as u64) as usize;
        let name = fleet.children[victim].0;
        let child = &mut fleet.children[victim].1;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        *kills.entry(name).or_default() += 1;
        let restarted = fleet.spawn(name);
        fleet.children[victim].1 = restarted;
    }
    stop.store(true, Ordering::Relaxed);
    driver.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    println!("{} annotations acknowledged under {kills:?} kills in {secs} s", acked.len());
    assert!(acked.len() > 50, "the driver barely got through: {}", acked.len());

    // Every acknowledged annotation is in the journal: its own record, at the seq it was given
    // (a lost label relabelled identically later would pass a check of final labels alone).
    let records = binann_core::journal::read_journal::<binann_core::annotations::Record>(
        &run.join("annotations.journal"),
        binann_core::codec::FileKind::Annotations,
    )
    .unwrap()
    .records;
    for (id, positive, seq) in &acked {
        let record = records.iter().find(|r| r.seq == *seq);
        let want = if *positive { Label::Positive } else { Label::Negative };
        assert!(
            record.is_some_and(
                |r| matches!(r.event, binann_core::annotations::Event::Label { id: i, label, .. } if i == *id && label == want)
            ),
            "acknowledged seq {seq} (image {id}) is not in the journal as given: {record:?}"
        );
    }
    let handed_again = handed_again.lock().unwrap().clone();
    assert!(handed_again.is_empty(), "images handed out again after their label was acknowledged: {handed_again:?}");
    let state = AnnotationState::load(&run.join("annotations.journal")).unwrap();
    for (id, positive, _) in &acked {
        let label = state.get(*id).map(|e| e.label);
        assert_eq!(label, Some(if *positive { Label::Positive } else { Label::Negative }), "annotation of image {id} lost");
    }
    // The loop recovers: a ranking from a model trained on every label.
    let labels = state.counts().annotated();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok((_, r)) = Ranking::load(&run.join("ranking.bin"))
            && r.model.as_ref().is_some_and(|m| m.labels_used == labels)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no ranking from a model trained on all {labels} labels after the chaos");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every file in the run directory decodes.
    for entry in std::fs::read_dir(&run).unwrap().chain(std::fs::read_dir(run.join("embeddings")).unwrap()).flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() || name.ends_with(".lock") || name == "BINANN-RUNDIR" || name.contains(".damaged-") {
            continue;
        }
        let out = Command::new(bin("binann")).arg("inspect").arg(&path).output().unwrap();
        assert!(
            out.status.success() || name.ends_with(binann_core::atomic::TEMP_SUFFIX),
            "{name} does not decode: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
