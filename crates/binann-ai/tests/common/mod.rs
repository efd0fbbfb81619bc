//! Helpers shared by the AI processes' integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
