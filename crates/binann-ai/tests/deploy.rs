//! The job files of `deploy/` run N shards through `deploy/run-shard.sh` (the Slurm array's batch
//! script itself; the Kubernetes pods' command with the variables Kubernetes sets), and together
//! the shards embed every image exactly once and predict every unlabelled one exactly once.
//! Needs `scripts/setup.sh` (Fashion-MNIST and the ImageNet weights in `.cache/`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use binann_core::RunDirFile;
use binann_core::annotations::Label;
use binann_core::embeddings::EmbeddingChunk;
use binann_core::predictions::Predictions;
use binann_core::rundir::RunDir;
use common::{bin, labelled_run, run_ok, weights, workspace};

const SHARDS: u32 = 3;
const IMAGES: usize = 60;
const LABELLED: u32 = 12;

/// A run directory over 60 Fashion-MNIST images, 12 of them labelled, with a trained checkpoint.
fn prepared_run(tmp: &Path) -> (PathBuf, Vec<(&'static str, String)>) {
    // Two of each class for sure, then the truth.
    let (run, _) = labelled_run(tmp, IMAGES, LABELLED, |id, positive| match id {
        0 | 1 => Label::Positive,
        2 | 3 => Label::Negative,
        _ if positive => Label::Positive,
        _ => Label::Negative,
    });
    let rundir = RunDir::open_existing(&run);
    let env = vec![
        ("BINANN_RUNDIR", run.to_str().unwrap().to_owned()),
        ("BINANN_WEIGHTS", weights().to_str().unwrap().to_owned()),
        ("BINANN_INPUT_SIZE", "64".to_owned()),
        ("BINANN_DEVICE", "cpu".to_owned()),
        ("BINANN_BIN", bin("binann-inferrer").parent().unwrap().to_str().unwrap().to_owned()),
    ];
    run_ok(Command::new(bin("binann-trainer")).arg("--once").envs(env.iter().map(|(k, v)| (k, v))).env("OMP_WAIT_POLICY", "PASSIVE"));
    assert!(rundir.checkpoint().exists());
    (run, env)
}

/// Runs the shards side by side, as a scheduler would, and waits for them all.
fn run_shards(mut shard: impl FnMut(u32) -> Command) {
    let children: Vec<_> = (0..SHARDS)
        .map(|k| {
            let mut cmd = shard(k);
            (k, cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap())
        })
        .collect();
    for (k, child) in children {
        let out = child.wait_with_output().unwrap();
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "shard {k} failed: {log}");
        assert!(log.contains(&format!("shard {k}/{SHARDS}")), "shard {k} says which it is: {log}");
    }
}

/// Every image embedded exactly once, every unlabelled image predicted exactly once (by the shard
/// that owns it), no labelled image predicted; the selector ranks them all.
fn assert_covered_once(run: &Path, env: &[(&'static str, String)]) {
    let rundir = RunDir::open_existing(run);
    let mut embedded: HashMap<u32, u32> = HashMap::new();
    for entry in std::fs::read_dir(rundir.embeddings_dir()).unwrap() {
        let chunk = EmbeddingChunk::load(&entry.unwrap().path()).unwrap().1;
        assert!(chunk.failed.is_empty(), "no image failed: {:?}", chunk.failed);
        for id in chunk.ids {
            *embedded.entry(id).or_default() += 1;
        }
    }
    assert_eq!(embedded.len(), IMAGES, "every image embedded");
    assert!(embedded.values().all(|n| *n == 1), "each image embedded once: {embedded:?}");

    let mut predicted: HashMap<u32, u32> = HashMap::new();
    for k in 0..SHARDS {
        let (_, p) = Predictions::load(&rundir.predictions(k, SHARDS)).unwrap();
        assert_eq!(p.shard, (k, SHARDS));
        assert!(p.failed.is_empty(), "shard {k}: {:?}", p.failed);
        assert_eq!(p.ids.len(), p.logits.len());
        assert!(p.logits.iter().all(|l| l.is_finite()), "shard {k}: logits");
        for id in p.ids {
            assert_eq!(id % SHARDS, k, "shard {k} predicted image {id}, which is not its own");
            *predicted.entry(id).or_default() += 1;
        }
    }
    let unlabelled: Vec<u32> = (LABELLED..IMAGES as u32).collect();
    let mut ids: Vec<u32> = predicted.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, unlabelled, "every unlabelled image predicted, no labelled one");
    assert!(predicted.values().all(|n| *n == 1), "each image predicted once: {predicted:?}");

    run_ok(Command::new(bin("binann-selector")).arg("--once").envs(env.iter().map(|(k, v)| (k, v))));
    let (_, ranking) = binann_core::ranking::Ranking::load(&rundir.ranking()).unwrap();
    assert_eq!(ranking.predicted, unlabelled.len() as u64, "the selector merges the shards");
}

#[test]
fn slurm_array_tasks_cover_every_image_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, env) = prepared_run(tmp.path());
    let sbatch = workspace().join("deploy/slurm/binann-shards.sbatch");
    run_shards(|k| {
        // What Slurm does for array task K: run (a copy of) the batch script with these set.
        let mut cmd = Command::new("bash");
        cmd.arg(&sbatch)
            .current_dir(tmp.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("SLURM_SUBMIT_DIR", workspace())
            .env("SLURM_ARRAY_TASK_ID", k.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", SHARDS.to_string())
            .env("SLURM_CPUS_PER_TASK", "1");
        cmd
    });
    assert_covered_once(&run, &env);
}

#[test]
fn kubernetes_indexed_pods_cover_every_image_once() {
    let yaml = std::fs::read_to_string(workspace().join("deploy/kubernetes/binann-shards.yaml")).unwrap();
    let field = |name: &str| -> String {
        let line = yaml.lines().map(str::trim).find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in the job"));
        line[name.len()..].trim().trim_matches('"').to_owned()
    };
    assert_eq!(field("completionMode:"), "Indexed");
    let completions = field("completions:");
    assert_eq!(field("parallelism:"), completions, "one pod per shard at once");
    let shards_line = yaml.lines().position(|l| l.trim() == "- name: BINANN_SHARDS").expect("BINANN_SHARDS in the job");
    let shards_value = yaml.lines().nth(shards_line + 1).unwrap().trim().trim_start_matches("value:").trim().trim_matches('"').to_owned();
    assert_eq!(shards_value, completions, "BINANN_SHARDS is the number of pods");
    let command = field("command:");
    assert!(command.contains("/deploy/run-shard.sh"), "the pods run deploy/run-shard.sh: {command}");

    let tmp = tempfile::tempdir().unwrap();
    let (run, env) = prepared_run(tmp.path());
    let script = workspace().join("deploy/run-shard.sh");
    // Without a shard to run, it says what it needs.
    let out = Command::new(&script).envs(env.iter().map(|(k, v)| (k, v))).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JOB_COMPLETION_INDEX"), "{}", String::from_utf8_lossy(&out.stderr));
    run_shards(|k| {
        // What Kubernetes does for pod K: run the container's command with these set.
        let mut cmd = Command::new(&script);
        cmd.current_dir(tmp.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("JOB_COMPLETION_INDEX", k.to_string())
            .env("BINANN_SHARDS", SHARDS.to_string())
            .env("BINANN_THREADS", "1");
        cmd
    });
    assert_covered_once(&run, &env);
}
