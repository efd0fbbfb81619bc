//! `config/binann.env` lists every option of every long-running process with its real default,
//! and nothing else (launch.sh's own variables aside), so the file a user edits never lies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn bin(name: &str) -> PathBuf {
    let path = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// NAME -> default ("" when the option has none), from a binary's `--help`.
fn options_of(binary: &str) -> BTreeMap<String, String> {
    let out = Command::new(bin(binary)).arg("--help").output().unwrap();
    assert!(out.status.success(), "{binary} --help: {}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8(out.stdout).unwrap();
    let mut options = BTreeMap::new();
    for piece in help.split("[env: ").skip(1) {
        let name: String = piece.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        let rest = &piece[piece.find(']').unwrap() + 1..];
        let default = rest.trim_start().strip_prefix("[default: ").map(|d| d[..d.find(']').unwrap()].to_owned()).unwrap_or_default();
        options.insert(name, default);
    }
    assert!(!options.is_empty(), "{binary} --help names no environment variable");
    options
}

#[test]
fn the_env_file_lists_every_option_with_its_default() {
    let mut wanted = BTreeMap::new();
    for binary in ["binann-server", "binann-trainer", "binann-inferrer", "binann-selector"] {
        for (name, default) in options_of(binary) {
            if let Some(other) = wanted.insert(name.clone(), default.clone()) {
                assert_eq!(other, default, "{name} has two defaults");
            }
        }
    }
    let text = std::fs::read_to_string(workspace().join("config/binann.env")).unwrap();
    let launch_sh = std::fs::read_to_string(workspace().join("launch.sh")).unwrap();
    let mut listed = BTreeMap::new();
    let mut section = "";
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title;
            continue;
        }
        let Some(entry) = line.strip_prefix("# ").filter(|e| e.starts_with(|c: char| c.is_ascii_uppercase())) else { continue };
        let Some((name, value)) = entry.split_once('=') else { continue };
        let value = value.split_whitespace().next().unwrap_or("");
        if section == "launch.sh" {
            assert!(launch_sh.contains(name), "{name} is listed under launch.sh but launch.sh does not read it");
            continue;
        }
        listed.insert(name.to_owned(), value.to_owned());
    }
    let missing: Vec<_> = wanted.keys().filter(|k| !listed.contains_key(*k)).collect();
    let extra: Vec<_> = listed.keys().filter(|k| !wanted.contains_key(*k)).collect();
    assert!(missing.is_empty(), "options missing from config/binann.env: {missing:?}");
    assert!(extra.is_empty(), "config/binann.env lists what no process reads: {extra:?}");
    for (name, default) in &wanted {
        // Options without a default (the folders, the token) are listed empty or with launch.sh's value.
        if !default.is_empty() {
            assert_eq!(&listed[name], default, "{name}: config/binann.env says {:?}, the binaries default to {default:?}", listed[name]);
        }
    }
}

#[test]
fn a_polling_interval_below_the_minimum_is_refused() {
    for binary in ["binann-server", "binann-selector"] {
        let out = Command::new(bin(binary))
            .env("BINANN_POLL_MS", "0")
            .env("BINANN_RUNDIR", "/nonexistent")
            .env("BINANN_DATADIR", "/nonexistent")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("poll-ms"), "{binary} with BINANN_POLL_MS=0: {stderr}");
    }
}
