//! `binann export`, `binann simulate`, `binann inspect` and `binann demo-data` on small run
//! directories written through binann-core, as the processes would write them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use binann_core::RunDirFile;
use binann_core::annotations::{Event, Label, Record};
use binann_core::codec::FileKind;
use binann_core::journal::{self, JournalWriter};
use binann_core::manifest::Manifest;
use binann_core::predictions::{ModelInfo, Predictions};
use binann_core::rundir::RunDir;

fn binann(args: &[&str]) -> Output {
    // A token in the caller's environment must not stand in for the one a test gives.
    Command::new(env!("CARGO_BIN_EXE_binann")).args(args).env_remove("BINANN_TOKEN").output().unwrap()
}

fn stdout_ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// 10 images; 0..3 labelled by a person (2 skipped), every image predicted with prob id/10. The
/// labels are by "Ada" (0 and 2), someone who gave no name (1) and "Lovelace, Ada" (9).
fn run_directory(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    let rd = RunDir::create_or_open(&run).unwrap();
    Manifest { datadir: "/data".into(), paths: (0..10).map(|i| format!("img,{i}.png")).collect(), scanned_ms: 0 }
        .save(&rd.manifest(), 1)
        .unwrap();
    let mut w = JournalWriter::open::<Record>(&rd.annotations(), FileKind::Annotations).unwrap().writer;
    for (seq, (id, label)) in [(0, Label::Negative), (1, Label::Negative), (2, Label::Skip), (9, Label::Negative)].into_iter().enumerate() {
        let annotator = ["Ada", "", "Ada", "Lovelace, Ada"][seq].to_owned();
        // Image 9's label was an audit pick, drawn from the 8 images then unlabelled.
        let audit = (id == 9).then_some(binann_core::annotations::AuditPick { unlabelled: 8, found_before: 0 });
        let r = Record { audit, seq: seq as u64, time_ms: 0, client: "p".into(), annotator, event: Event::Label { id, label, prob: None } };
        w.append_framed(&journal::frame(&r)).unwrap();
    }
    let model = ModelInfo {
        checkpoint_generation: 3,
        checkpoint_ms: 0,
        labels_used: 3,
        positives_used: 1,
        mode: "head".into(),
        backbone: "mobilenet_v2".into(),
        input_size: 96,
        loss: 0.1,
    };
    // Two shards, as two inferrers would write them.
    for shard in 0..2u32 {
        let ids: Vec<u32> = (0..10).filter(|i| i % 2 == shard).collect();
        // The logit of probability id/10.
        let logits = ids.iter().map(|i| (*i as f32 / (10 - i) as f32).ln()).collect();
        Predictions { model: model.clone(), shard: (shard, 2), ids, logits, failed: vec![], created_ms: 0 }
            .save(&rd.predictions(shard, 2), 1)
            .unwrap();
    }
    run
}

#[test]
fn export_keeps_human_labels_apart_and_labels_the_rest_only_when_confident() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_directory(tmp.path());
    let run_s = run.to_str().unwrap();
    let csv = stdout_ok(binann(&["export", "--rundir", run_s, "--out", "-", "--threshold", "0.5"]));
    let rows: Vec<Vec<String>> = csv.lines().skip(1).map(split_csv).collect();
    assert_eq!(rows.len(), 10, "every image exactly once");
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids.len(), 10);
    // Image 9: the person said negative, the model says 0.9: the person wins, the model's view stays visible.
    assert_eq!(csv.lines().next(), Some("id,path,human_label,annotator,model_prob,model_label,label,label_source"));
    assert_eq!(rows[9], ["9", "img,9.png", "negative", "Lovelace, Ada", "0.900000", "positive", "negative", "human"]);
    // Without --label-rest the model never fills the label column.
    assert_eq!(rows[7][6..], ["", "none"]);
    assert_eq!(rows[2][2..4], ["skip", "Ada"]);
    // Who labelled: the name given, empty without one, and empty where no person labelled.
    assert_eq!([&rows[0][3], &rows[1][3], &rows[7][3]], ["Ada", "", ""]);
    assert_eq!(rows.iter().filter(|r| r[7] == "human").count(), 3);

    let jsonl = tmp.path().join("rest.jsonl");
    let exported = binann(&[
        "export",
        "--rundir",
        run_s,
        "--out",
        jsonl.to_str().unwrap(),
        "--label-rest",
        "--positive-above",
        "0.8",
        "--negative-below",
        "0.35",
    ]);
    // One random check is too few to say how many positives are left: the sentence says so
    // rather than "about 0 positives are still unlabelled".
    let said = String::from_utf8_lossy(&exported.stderr).into_owned();
    stdout_ok(exported);
    assert!(said.contains("binann export: positives left not known yet: 1 random check so far, at most 6 left (95 %)"), "{said}");
    assert!(!said.contains("about 0 positives"), "{said}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 10);
    // The summary beside it: the counts, and the positives-left estimate from the one audit label
    // (negative, of 8 unlabelled: none left by the estimate; the interval's 8 × 0.975 is capped at
    // the 6 images unlabelled now).
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("rest.jsonl.summary.json")).unwrap()).unwrap();
    assert_eq!(summary["images"], 10);
    assert_eq!(summary["labelled_by_person"], 3);
    let left = &summary["positives_left"];
    assert_eq!((left["audits"].as_u64(), left["estimate"].as_f64(), left["unlabelled"].as_u64()), (Some(1), Some(0.0), Some(6)), "{left}");
    assert_eq!(left["high"].as_f64(), Some(6.0), "{left}");
    assert_eq!((left["known"].as_bool(), left["can_stop"].as_bool()), (Some(false), Some(false)), "{left}");
    let source = |id: usize| (rows[id]["label"].as_str().map(str::to_owned), rows[id]["label_source"].as_str().unwrap().to_owned());
    assert_eq!(source(8), (Some("positive".into()), "model".into()));
    assert_eq!(source(3), (Some("negative".into()), "model".into()));
    assert_eq!(source(5), (None, "none".into()), "uncertain images stay unlabelled");
    assert_eq!(source(9), (Some("negative".into()), "human".into()));
    assert_eq!((rows[9]["annotator"].as_str(), rows[8]["annotator"].as_str()), (Some("Lovelace, Ada"), Some("")));
    assert_eq!(source(2), (Some("negative".into()), "model".into()), "a skipped image may be labelled by the model");
    let (human, model, none) = rows.iter().fold((0, 0, 0), |(h, m, n), r| match r["label_source"].as_str().unwrap() {
        "human" => (h + 1, m, n),
        "model" => (h, m + 1, n),
        _ => (h, m, n + 1),
    });
    assert_eq!((human, model, none), (3, 3, 4));

    for bad in [["--threshold", "1.5"], ["--threshold", "nan"]] {
        let out = binann(&["export", "--rundir", run_s, "--out", "-", bad[0], bad[1]]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("between 0 and 1"));
    }
    let out = binann(&["export", "--rundir", run_s, "--out", "-", "--label-rest", "--positive-above", "0.2", "--negative-below", "0.4"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be below"));
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

#[test]
fn inspect_prints_every_kind_of_file_and_names_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_directory(tmp.path());
    for (file, expect) in [
        ("manifest.bin", "\"kind\":\"manifest\""),
        ("annotations.journal", "\"records\":4"),
        ("annotations.journal", "\"annotator\":\"Lovelace, Ada\""),
        (
            "annotations.journal",
            "\"positives_left_summary\":\"positives left not known yet: 1 random check so far, at most 6 left (95 %)\"",
        ),
        ("predictions-1-of-2.bin", "\"shard\":[1,2]"),
    ] {
        let out = stdout_ok(binann(&["inspect", run.join(file).to_str().unwrap()]));
        assert!(out.contains(expect), "{file}: {out}");
        for line in out.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{file}: not JSON: {line}: {e}"));
        }
    }
    let bytes = std::fs::read(run.join("manifest.bin")).unwrap();
    let truncated = tmp.path().join("truncated.bin");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = binann(&["inspect", truncated.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated.bin") && err.contains("truncated"), "{err}");
}

#[test]
fn simulate_labels_through_the_api_from_the_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut truth = String::from("path,label\n");
    for i in 0..12 {
        image::GrayImage::from_pixel(4, 4, image::Luma([i * 20])).save(data.join(format!("{i:02}.png"))).unwrap();
        truth.push_str(&format!("{i:02}.png,{}\n", u8::from(i % 3 == 0)));
    }
    let truth_csv = tmp.path().join("truth.csv");
    std::fs::write(&truth_csv, truth).unwrap();
    let server_bin = Path::new(env!("CARGO_BIN_EXE_binann")).with_file_name("binann-server");
    assert!(server_bin.exists(), "build the workspace first (cargo build --workspace)");
    // Beyond loopback, with a token: the simulator sends it as a script would.
    let token = "simulated-annotators-token";
    let run = tmp.path().join("run");
    let mut server = Command::new(server_bin)
        .args([
            "--port",
            "0",
            "--host",
            "0.0.0.0",
            "--token",
            token,
            "--datadir",
            data.to_str().unwrap(),
            "--rundir",
            run.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = binann_testkit::server_url(&mut server).unwrap().replace("//0.0.0.0:", "//127.0.0.1:");
    let trace = tmp.path().join("trace.csv");
    let without_token = binann(&["simulate", "--url", &url, "--truth", truth_csv.to_str().unwrap(), "--labels", "1", "--pace", "0"]);
    assert!(String::from_utf8_lossy(&without_token.stderr).contains("401"), "{without_token:?}");
    let summary = binann(&[
        "simulate",
        "--url",
        &url,
        "--token",
        token,
        "--annotator",
        "Zoë, the simulator",
        "--truth",
        truth_csv.to_str().unwrap(),
        "--labels",
        "8",
        "--pace",
        "0",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_ok(summary)).unwrap();
    let trace = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(trace.lines().count(), 9);
    let found_in_trace = trace.lines().skip(1).filter(|l| l.split(',').nth(3) == Some("1")).count();
    assert_eq!(summary["labels"], 8);
    assert_eq!(summary["positives_found"], found_in_trace);
    assert_eq!(summary["positives_in_truth"], 4);
    let stats: serde_json::Value =
        ureq::get(&format!("{url}/api/stats")).set("Authorization", &format!("Bearer {token}")).call().unwrap().into_json().unwrap();
    assert_eq!(stats["annotated"], 8);
    assert_eq!(stats["annotators"][0]["name"], "Zoë, the simulator");
    assert_eq!(stats["annotators"][0]["annotated"], 8);
    // The name reaches the export, beside each label the simulator gave.
    let csv = stdout_ok(binann(&["export", "--rundir", run.to_str().unwrap(), "--out", "-"]));
    let rows: Vec<Vec<String>> = csv.lines().skip(1).map(split_csv).collect();
    let named = rows.iter().filter(|r| r[3] == "Zoë, the simulator").count();
    assert_eq!(named, 8, "{csv}");
    assert!(rows.iter().all(|r| (r[7] == "human") == (r[3] == "Zoë, the simulator")), "{csv}");
    assert_eq!(stats["positives"].as_u64().unwrap() as usize, found_in_trace, "the server got the truth's labels");
    // A truth file that does not cover the dataset is a clear error.
    std::fs::write(&truth_csv, "path,label\nother.png,1\n").unwrap();
    let out =
        binann(&["simulate", "--url", &url, "--token", token, "--truth", truth_csv.to_str().unwrap(), "--labels", "1", "--pace", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the truth CSV"));
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn demo_data_refuses_an_unknown_class() {
    let tmp = tempfile::tempdir().unwrap();
    let out = binann(&[
        "demo-data",
        "--source",
        "/nonexistent",
        "--out",
        tmp.path().join("d").to_str().unwrap(),
        "--truth",
        tmp.path().join("t.csv").to_str().unwrap(),
        "--positive",
        "unicorn",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown positive class \"unicorn\""));
}
