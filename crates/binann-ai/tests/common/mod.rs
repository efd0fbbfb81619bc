//! Helpers shared by the AI processes' integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use binann_core::RunDirFile;
use binann_core::annotations::{Event, Label, Record};
use binann_core::codec::FileKind;
use binann_core::journal::{self, JournalWriter};
use binann_core::manifest::Manifest;
use binann_core::rundir::RunDir;

/// The workspace root (where `.cache/` holds Fashion-MNIST and the weights).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A binary of the workspace, built by `cargo test --workspace` (or `cargo build`).
pub fn bin(name: &str) -> PathBuf {
    let path = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// The converted ImageNet weights, which `scripts/setup.sh` makes.
pub fn weights() -> PathBuf {
    let w = workspace().join(".cache/weights/mobilenet_v2.safetensors");
    assert!(w.exists(), "run `bash scripts/setup.sh` first (Fashion-MNIST and the ImageNet weights)");
    w
}

/// Runs `cmd`; fails the test with its stderr unless it succeeds. Returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A run directory at `tmp/run` over `images` Fashion-MNIST images written to `tmp/data`
/// (positive: shoes), with a manifest and, as the server would write them, the first `labelled`
/// images labelled by `label(id, truly positive)`. Returns the run directory and the manifest.
pub fn labelled_run(tmp: &Path, images: usize, labelled: u32, label: impl Fn(u32, bool) -> Label) -> (PathBuf, Manifest) {
    let (data, run, truth) = (tmp.join("data"), tmp.join("run"), tmp.join("truth.csv"));
    run_ok(
        Command::new(bin("binann"))
            .args(["demo-data", "--count", &images.to_string(), "--positive", "shoe"])
            .arg("--source")
            .arg(workspace().join(".cache/fashion-mnist"))
            .arg("--out")
            .arg(&data)
            .arg("--truth")
            .arg(&truth),
    );
    let rundir = RunDir::create_or_open(&run).unwrap();
    let (manifest, _) = Manifest::scan(&data, None).unwrap();
    manifest.save(&rundir.manifest(), 1).unwrap();
    // demo-data's paths hold no comma: a plain split reads its CSV.
    let truth_text = std::fs::read_to_string(&truth).unwrap();
    let positive: std::collections::HashMap<&str, bool> = truth_text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f[1] == "1")
        })
        .collect();
    let mut writer = JournalWriter::open::<Record>(&rundir.annotations(), FileKind::Annotations).unwrap().writer;
    for id in 0..labelled {
        let r = Record {
            audit: None,
            seq: u64::from(id),
            time_ms: 0,
            client: "t".into(),
            annotator: String::new(),
            event: Event::Label { id, label: label(id, positive[&manifest.paths[id as usize]]), prob: None },
        };
        writer.append_framed(&journal::frame(&r)).unwrap();
    }
    (run, manifest)
}
