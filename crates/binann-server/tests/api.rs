//! The server's HTTP API, against the real binary with generated images.

mod common;

use std::collections::HashSet;

use binann_core::RunDirFile;
use binann_core::annotations::Record;
use binann_core::codec::FileKind;
use common::{code, make_dataset, start_server, try_start_server};

fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    (tmp, data, run)
}

#[test]
fn next_annotate_undo_skip_and_stats() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 20);
    let server = start_server(&data, &run, &[]);
    let c = server.client("alice");
    let s = c.stats();
    assert_eq!((s["total"].as_u64(), s["annotated"].as_u64(), s["remaining"].as_u64()), (Some(20), Some(0), Some(20)));
    let typed: binann_core::api::Stats = serde_json::from_value(s.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), s);

    let (status, body) = c.get("/api/next?count=3");
    assert_eq!(status, 200);
    let items = body.as_array().unwrap();
    assert_eq!(items.len(), 3);
    let first = &items[0];
    assert!(first["prob"].is_null());
    assert_eq!(first["url"], format!("/api/images/{}", first["id"]));
    let ids: Vec<u64> = items.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    // The JSON is what binann_core::api says, field for field (the tools read it through it).
    let typed: Vec<binann_core::api::Image> = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), body);

    assert_eq!(c.annotate(ids[0], "positive").0, 200);
    // A retried request (its answer lost) is not recorded twice.
    let retry = c.annotate(ids[0], "positive");
    assert_eq!((retry.0, retry.1["seq"].as_u64()), (200, Some(0)));
    assert_eq!(c.annotate(ids[1], "negative").0, 200);
    assert_eq!(c.annotate(ids[2], "skip").0, 200);
    let s = c.stats();
    assert_eq!((s["positives"].as_u64(), s["negatives"].as_u64(), s["skipped"].as_u64()), (Some(1), Some(1), Some(1)));
    assert_eq!((s["annotated"].as_u64(), s["remaining"].as_u64(), s["last_minute"].as_u64()), (Some(2), Some(17), Some(2)));
    assert!(c.next(20).iter().all(|id| !ids.contains(id)), "labelled or skipped images came back");

    // Undo goes back one label at a time and shows that image again.
    let (status, body) = c.undo();
    assert_eq!(status, 200);
    assert_eq!((body["id"].as_u64(), body["label"].as_str()), (Some(ids[2]), Some("skip")));
    assert_eq!(body["path"].as_str().unwrap(), {
        let (_, img) = c.get("/api/next?count=20");
        img.as_array().unwrap().iter().find(|v| v["id"].as_u64() == Some(ids[2])).unwrap()["path"].as_str().unwrap().to_owned()
    });
    assert_eq!(c.undo().1["id"].as_u64(), Some(ids[1]));
    assert_eq!(c.stats()["negatives"].as_u64(), Some(0));
    // Relabelling replaces.
    assert_eq!(c.annotate(ids[0], "negative").0, 200);
    let s = c.stats();
    assert_eq!((s["positives"].as_u64(), s["negatives"].as_u64()), (Some(0), Some(1)));
    let (_, h) = c.get("/api/history");
    assert_eq!(h["labels"].as_array().unwrap().len(), 1);
    assert_eq!(c.undo().1["label"].as_str(), Some("negative"));
    assert_eq!(c.stats()["positives"].as_u64(), Some(1), "undo of a relabel restores the label it replaced");
    assert_eq!(c.undo().0, 200);
    let r = c.undo();
    assert_eq!((r.0, code(&r)), (409, "nothing_to_undo"));

    // The image bytes, with the right content type.
    let resp = c.agent.get(&format!("{}/api/images/{}", server.base, ids[0])).call().unwrap();
    assert_eq!(resp.content_type(), "image/png");
    let health = c.get("/health");
    assert_eq!((health.0, health.1["images"].as_u64()), (200, Some(20)));
    // The page is served.
    let page = c.agent.get(&format!("{}/", server.base)).call().unwrap().into_string().unwrap();
    assert!(page.contains("<html"), "{page}");
}

#[test]
fn resumes_after_restart() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 10);
    let server = start_server(&data, &run, &[]);
    let c = server.client("a");
    let ids = c.next(4);
    for id in &ids[..3] {
        assert_eq!(c.annotate(*id, "positive").0, 200);
    }
    let (_, paths_before) = c.get("/api/next?count=10");
    server.stop();
    let server = start_server(&data, &run, &[]);
    let c = server.client("a");
    assert_eq!(c.stats()["positives"].as_u64(), Some(3));
    let (_, first) = c.get("/api/next?count=1");
    assert_eq!(first[0]["id"].as_u64(), Some(ids[3]), "resumes at the next unlabelled image");
    assert_eq!(c.undo().1["id"].as_u64(), Some(ids[2]), "undo works across restarts");
    server.stop();
    // New images appear between sessions: old ids keep their files, new ones get new ids.
    image::GrayImage::from_pixel(8, 8, image::Luma([1])).save(data.join("aaa-new.png")).unwrap();
    let server = start_server(&data, &run, &[]);
    let c = server.client("a");
    let s = c.stats();
    assert_eq!((s["positives"].as_u64(), s["total"].as_u64()), (Some(2), Some(11)));
    let (_, paths_after) = c.get("/api/next?count=10");
    let by_id = |v: &serde_json::Value| -> std::collections::HashMap<u64, String> {
        v.as_array().unwrap().iter().map(|e| (e["id"].as_u64().unwrap(), e["path"].as_str().unwrap().to_owned())).collect()
    };
    let (before, after) = (by_id(&paths_before), by_id(&paths_after));
    assert!(after.iter().any(|(id, p)| *id == 10 && p == "aaa-new.png"), "{after:?}");
    for (id, path) in &after {
        if let Some(old) = before.get(id) {
            assert_eq!(old, path, "image {id} changed file");
        }
    }
}

#[test]
fn audit_labels_are_journalled_estimate_positives_left_and_survive_a_restart() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 200);
    let server = start_server(&data, &run, &["--audit-rate", "0.5"]);
    let c = server.client("a");
    assert!(c.stats()["positives_left"].is_null(), "no estimate before any audit label");
    // Every tenth image handed out is called positive.
    for i in 0..60 {
        let id = c.next(1)[0];
        assert_eq!(c.annotate(id, if i % 10 == 0 { "positive" } else { "negative" }).0, 200);
    }
    let journal = binann_core::journal::read_journal::<Record>(&run.join("annotations.journal"), FileKind::Annotations).unwrap();
    let audited: Vec<&Record> = journal.records.iter().filter(|r| r.audit.is_some()).collect();
    // 60 hand-outs at rate 0.5: 30 expected, 99.9 % within 17..=43.
    assert!((17..=43).contains(&audited.len()), "{} audit labels", audited.len());
    for r in &audited {
        let pick = r.audit.unwrap();
        assert!(pick.unlabelled <= 200 && pick.unlabelled >= 141, "{pick:?}");
    }
    let left = c.stats()["positives_left"].clone();
    assert_eq!(left["audits"].as_u64(), Some(audited.len() as u64), "{left}");
    assert_eq!(left["found"].as_u64(), Some(6));
    assert_eq!(left["unlabelled"].as_u64(), Some(140));
    let (low, estimate, high) = (left["low"].as_f64().unwrap(), left["estimate"].as_f64().unwrap(), left["high"].as_f64().unwrap());
    assert!(low <= estimate && estimate <= high && high <= 140.0, "{left}");
    // Undoing an audit label takes it out of the estimate; labelling the image again puts it back.
    let last_audited = journal.records.last().unwrap().audit.is_some();
    let undone = c.undo().1;
    let after_undo = c.stats()["positives_left"]["audits"].as_u64().unwrap_or(0);
    assert_eq!(after_undo, audited.len() as u64 - u64::from(last_audited));
    assert_eq!(c.annotate(undone["id"].as_u64().unwrap(), "negative").0, 200);
    let relabelled = c.stats()["positives_left"].clone();
    assert_eq!(relabelled["audits"].as_u64(), Some(audited.len() as u64));
    server.stop();
    let server = start_server(&data, &run, &["--audit-rate", "0.5"]);
    assert_eq!(server.client("a").stats()["positives_left"], relabelled, "the same estimate after a restart");
    server.stop();
}

#[test]
fn more_like_this_puts_the_true_neighbours_next_for_this_client_only() {
    use binann_core::sketches::{SKETCH_DIM, Sketches};
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 40);
    // Before any sketch file: a clear 409.
    let server = start_server(&data, &run, &["--audit-rate", "0"]);
    let c = server.client("a");
    let (status, body) = c.post_json("/api/similar", r#"{"id": 3}"#);
    assert_eq!((status, code(&(status, body.clone()))), (409, "not_embedded"), "{body}");
    server.stop();
    // Images 0..30 embedded on a line (image i at 4 i, image 29 at 127, so that the quantised
    // values are exact); 30..40 not embedded.
    let at = |i: u32| if i == 29 { 127.0 } else { 4.0 * i as f32 };
    let rows: Vec<f32> = (0..30).flat_map(|i| std::iter::once(at(i)).chain(std::iter::repeat_n(0.0, SKETCH_DIM - 1))).collect();
    Sketches::quantise((0..30).collect(), &rows, "m".into()).save(&run.join("sketches.bin"), 1).unwrap();
    let server = start_server(&data, &run, &["--audit-rate", "0", "--lookalikes", "0"]);
    let (a, b) = (server.client("a"), server.client("b"));
    // Label 19 first: the neighbours of 20 are then 21, 18, 22 (nearest first; 19 is labelled).
    assert_eq!(a.annotate(19, "positive").0, 200);
    let (status, body) = a.post_json("/api/similar", r#"{"id": 20, "count": 3}"#);
    assert_eq!(status, 200, "{body}");
    let queued: Vec<u64> = body["queued"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    // 21 at distance 4; 18 and 22 at 8 (ties by id).
    assert_eq!(queued, [21, 18, 22]);
    // b's next images are the ranking's, none of a's.
    let b_next = b.next(5);
    assert!(b_next.iter().all(|id| ![18, 21, 22].contains(id)), "{b_next:?}");
    // a gets them next, nearest first.
    assert_eq!(a.next(3), [21, 18, 22]);
    // An image without a sketch, an unknown image, a bad count: clear errors.
    let r = a.post_json("/api/similar", r#"{"id": 35}"#);
    assert_eq!((r.0, code(&r)), (409, "not_embedded"));
    let r = a.post_json("/api/similar", r#"{"id": 400}"#);
    assert_eq!((r.0, code(&r)), (404, "unknown_image"));
    let r = a.post_json("/api/similar", r#"{"id": 1, "count": 0}"#);
    assert_eq!((r.0, code(&r)), (400, "invalid_count"));
    let r = a.post_json("/api/similar", r#"{"id": 1, "extra": 1}"#);
    assert_eq!((r.0, code(&r)), (400, "bad_request"));
    server.stop();
}

#[test]
fn a_positive_of_a_new_kind_puts_its_lookalikes_next_for_its_labeller_only() {
    use binann_core::sketches::{SKETCH_DIM, Sketches};
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 140);
    // Kinds of 40 images each, far apart, on an axis each at 88..=127 (the largest value 127, so
    // the quantised values are exact): kind A (ids 0..40) on the first, B (40..80) on the second,
    // C (80..120) on the third. More images of a kind than the 32 a positive is compared with.
    let row = |i: u32| {
        let mut r = vec![0.0f32; SKETCH_DIM];
        r[(i / 40) as usize] = (88 + i % 40) as f32;
        r
    };
    let write_sketches = |embedded: u32, generation: u64| {
        let rows: Vec<f32> = (0..embedded).flat_map(row).collect();
        Sketches::quantise((0..embedded).collect(), &rows, "m".into()).save(&run.join("sketches.bin"), generation).unwrap();
    };
    binann_core::rundir::RunDir::create_or_open(&run).unwrap();
    write_sketches(80, 1); // A and B embedded; C not yet
    let server = start_server(&data, &run, &["--audit-rate", "0", "--lookalikes", "3"]);
    let (a, b) = (server.client("a"), server.client("b"));
    let lookalikes = |r: (u16, serde_json::Value)| -> Vec<u64> {
        assert_eq!(r.0, 200, "{}", r.1);
        r.1["lookalikes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
    };
    // The first positive of kind A: its nearest (9 and 11 at 1, ties by id; then 8) come next
    // for a, and only for a.
    assert_eq!(lookalikes(a.annotate(10, "positive")), [9, 11, 8]);
    let b_next = b.next(10);
    assert!(b_next.iter().all(|id| ![9, 11, 8].contains(id)), "{b_next:?}");
    assert_eq!(a.next(3), [9, 11, 8]);
    // A second positive of kind A resembles the first: nothing is put next; nor after a negative.
    assert_eq!(lookalikes(a.annotate(9, "positive")), Vec::<u64>::new());
    assert_eq!(lookalikes(a.annotate(11, "negative")), Vec::<u64>::new());
    // The first positive of kind B: a new kind again.
    assert_eq!(lookalikes(a.annotate(60, "positive")), [59, 61, 58]);
    assert_eq!(a.next(3), [59, 61, 58]);
    // A positive of kind C, not embedded yet: labelled as ever, its look-alikes wait for its
    // sketch and come next for a once the selector writes it.
    assert_eq!(lookalikes(a.annotate(100, "positive")), Vec::<u64>::new());
    write_sketches(120, 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let next = a.next(3);
        if next == [99, 101, 98] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the look-alikes of 100 never came: {next:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(b.next(20).iter().all(|id| ![99, 101, 98].contains(id)), "they are a's");
    server.stop();
    // --lookalikes 0: never.
    let server = start_server(&data, &run, &["--audit-rate", "0", "--lookalikes", "0"]);
    let a = server.client("a");
    assert_eq!(lookalikes(a.annotate(20, "positive")), Vec::<u64>::new());
    server.stop();
}

#[test]
fn two_clients_never_share_images_and_undo_only_their_own() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 30);
    let server = start_server(&data, &run, &[]);
    let (a, b) = (server.client("tab-a"), server.client("tab-b"));
    let ia = a.next(5);
    let ib = b.next(5);
    assert!(ia.iter().all(|id| !ib.contains(id)), "{ia:?} {ib:?}");
    assert_eq!(a.annotate(ia[0], "positive").0, 200);
    assert_eq!(b.annotate(ib[0], "negative").0, 200);
    assert_eq!(b.annotate(ib[1], "negative").0, 200);
    let r = a.undo();
    assert_eq!(r.1["id"].as_u64(), Some(ia[0]));
    assert_eq!(a.undo().0, 409);
    assert_eq!(b.stats()["negatives"].as_u64(), Some(2));
    // What a client shows stays with it (keep), even though asking again releases the rest.
    let shown = a.next(1)[0];
    let (status, body) = a.get(&format!("/api/next?count=3&keep={shown}"));
    assert_eq!(status, 200);
    assert!(body.as_array().unwrap().iter().all(|v| v["id"].as_u64() != Some(shown)), "kept images are not handed out again");
    assert!(!b.next(32).contains(&shown));
    assert_eq!(a.get("/api/next?keep=1,x").0, 400);
    let too_many = (0..65).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    assert_eq!(code(&a.get(&format!("/api/next?keep={too_many}"))), "bad_request");
    // Each asks again: still disjoint.
    let ia = a.next(10);
    let ib = b.next(10);
    assert!(ia.iter().all(|id| !ib.contains(id)));
    for id in ia.iter().chain(&ib) {
        assert_eq!(a.annotate(*id, "negative").0, 200);
    }

    // Concurrent clients labelling as fast as they can: no image handed to two clients at once.
    let handed = std::sync::Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let c = server.client(&format!("worker{t}"));
            let handed = &handed;
            s.spawn(move || {
                loop {
                    let ids = c.next(2);
                    if ids.is_empty() {
                        break;
                    }
                    for id in ids {
                        assert!(handed.lock().unwrap().insert(id), "image {id} handed out twice");
                        assert_eq!(c.annotate(id, "negative").0, 200);
                    }
                }
            });
        }
    });
    let s = a.stats();
    assert_eq!(s["remaining"].as_u64(), Some(0), "{s}");
}

#[test]
fn bad_requests_get_clear_json_errors() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 5);
    std::fs::write(data.join("corrupt.png"), b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    std::fs::write(data.join("bomb.png"), png_header_only(50_000, 50_000)).unwrap();
    let server = start_server(&data, &run, &[]);
    let c = server.client("x");
    let cases = [
        (c.annotate(999, "positive"), 404, "unknown_image"),
        (c.annotate(0, "maybe"), 400, "invalid_label"),
        (c.post_json("/api/annotations", r#"{"id": 0, "label": "positive""#), 400, "bad_request"),
        (c.post_json("/api/annotations", r#"{"id": "../../etc/passwd", "label": "positive"}"#), 400, "invalid_id"),
        (c.post_json("/api/annotations", r#"{"id": -1, "label": "positive"}"#), 400, "invalid_id"),
        (c.post_json("/api/annotations", r#"[1, 2]"#), 400, "bad_request"),
        (c.get("/api/images/..%2F..%2Fetc%2Fpasswd"), 400, "invalid_id"),
        (c.get("/api/images/%2e%2e"), 404, "not_found"),
        (c.get("/api/images/../../etc/passwd"), 404, "not_found"),
        (c.get("/api/images/4294967296"), 400, "invalid_id"),
        (c.get("/api/images/77"), 404, "unknown_image"),
        (c.get("/api/next?count=0"), 400, "invalid_count"),
        (c.get("/api/next?count=1000000"), 400, "invalid_count"),
        (c.get("/api/next?count=abc"), 400, "bad_request"),
        (c.get("/etc/passwd"), 404, "not_found"),
        (c.post_json("/api/next", "{}"), 405, "method_not_allowed"),
        (c.post_json("/api/annotations", &format!(r#"{{"id": 0, "label": "{}"}}"#, "x".repeat(17_000))), 413, "payload_too_large"),
        (c.post_json("/api/annotations", &format!(r#"{{"id": 0, "label": "{}"}}"#, "x".repeat(500_000))), 413, "payload_too_large"),
    ];
    for (i, (reply, status, expected)) in cases.iter().enumerate() {
        assert_eq!((reply.0, code(reply)), (*status, *expected), "case {i}: {}", reply.1);
        assert!(reply.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let corrupt =
        c.get("/api/next?count=7").1.as_array().unwrap().iter().find(|v| v["path"] == "corrupt.png").unwrap()["id"].as_u64().unwrap();
    let r = c.get(&format!("/api/images/{corrupt}"));
    assert_eq!((r.0, code(&r)), (422, "image_unreadable"), "{}", r.1);
    assert!(r.1["error"]["message"].as_str().unwrap().contains("corrupt.png"));
    let bomb = c.get("/api/next?count=7").1.as_array().unwrap().iter().find(|v| v["path"] == "bomb.png").unwrap()["id"].as_u64().unwrap();
    let r = c.get(&format!("/api/images/{bomb}"));
    assert_eq!((r.0, code(&r)), (422, "image_unreadable"), "{}", r.1);
    assert!(r.1["error"]["message"].as_str().unwrap().contains("50000x50000"), "{}", r.1);
    // A file that vanished mid-session.
    let gone =
        c.get("/api/next?count=7").1.as_array().unwrap().iter().find(|v| v["path"] == "img0000.png").unwrap()["id"].as_u64().unwrap();
    std::fs::remove_file(data.join("img0000.png")).unwrap();
    let r = c.get(&format!("/api/images/{gone}"));
    assert_eq!((r.0, code(&r)), (404, "image_missing"), "{}", r.1);
    // Nothing bad was recorded, and the server still works.
    assert_eq!(c.stats()["annotated"].as_u64(), Some(0));
    assert_eq!(c.annotate(0, "positive").0, 200);
}

#[test]
fn missing_or_empty_datadir_is_a_clear_error() {
    let (tmp, data, run) = dirs();
    let err = try_start_server(&data, &run, &[]).err().expect("must not start");
    assert_eq!(err.0, Some(2));
    assert!(err.1.contains("does not exist"), "{}", err.1);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("notes.txt"), "hello").unwrap();
    let err = try_start_server(&data, &tmp.path().join("run2"), &[]).err().expect("must not start");
    assert_eq!(err.0, Some(2));
    assert!(err.1.contains("holds no images"), "{}", err.1);
    // A non-empty folder that is not a run directory is never taken over.
    make_dataset(&data, 2);
    let err = try_start_server(&data, &data, &[]).err().expect("must not start");
    assert!(err.1.contains("not a binann run directory"), "{}", err.1);
}

#[test]
fn damaged_run_directory_files_are_reported_and_nothing_is_lost() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 10);
    let server = start_server(&data, &run, &[]);
    let c = server.client("a");
    for id in c.next(3) {
        assert_eq!(c.annotate(id, "positive").0, 200);
    }
    server.stop();
    let journal = run.join("annotations.journal");
    let good = std::fs::read(&journal).unwrap();

    // A torn last record (a write killed before it was acknowledged): kept aside, cut off.
    let mut torn = good.clone();
    torn.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&journal, &torn).unwrap();
    // A truncated ranking: reported, the default order served.
    std::fs::write(run.join("ranking.bin"), &good[..20]).unwrap();
    let server = start_server(&data, &run, &[]);
    let c = server.client("a");
    assert_eq!(c.stats()["positives"].as_u64(), Some(3));
    assert_eq!(c.next(10).len(), 7);
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("ranking.bin") && log.contains("truncated"), "{log}");
    let backups: Vec<_> =
        std::fs::read_dir(&run).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("damaged")).collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(std::fs::read(backups[0].path()).unwrap(), torn);
    server.stop();

    // A foreign file in place of the journal: refuse to start, touch nothing.
    std::fs::write(&journal, b"{\"these\": \"are someone else's notes\"}\n").unwrap();
    let err = try_start_server(&data, &run, &[]).err().expect("must refuse");
    assert!(err.1.contains("annotations.journal") && err.1.contains("not a binann file"), "{}", err.1);
    assert_eq!(std::fs::read(&journal).unwrap(), b"{\"these\": \"are someone else's notes\"}\n");
    // A manifest from the future: refuse clearly.
    std::fs::write(&journal, &good).unwrap();
    let manifest = run.join("manifest.bin");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[8] = 200;
    let crc = crc32(&bytes[0..36]);
    bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&manifest, &bytes).unwrap();
    let err = try_start_server(&data, &run, &[]).err().expect("must refuse");
    assert!(err.1.contains("manifest.bin") && err.1.contains("newer"), "{}", err.1);
}

/// A PNG that claims `w`x`h` pixels in a few bytes (a decompression bomb's header).
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    for (kind, data) in [(&b"IDAT"[..], &[0x78u8, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..]), (b"IEND", &[])] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn every_acknowledged_annotation_survives_kill_9() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 2000);
    for round in 0..3 {
        let server = start_server(&data, &run, &[]);
        let before = server.client("k").stats()["annotated"].as_u64().unwrap();
        let acked = std::sync::Mutex::new(Vec::new());
        // Several clients label concurrently; the server is killed while requests are in flight.
        std::thread::scope(|s| {
            for t in 0..3 {
                let c = server.client(&format!("k{round}-{t}"));
                let acked = &acked;
                s.spawn(move || {
                    for _ in 0..150 {
                        let Ok(resp) = c.agent.get(&format!("{}/api/next?count=1", c.base)).set("X-Client", &c.name).call() else { return };
                        let Ok(v) = resp.into_json::<serde_json::Value>() else { return };
                        let Some(id) = v[0]["id"].as_u64() else { return };
                        let url = format!("{}/api/annotations", c.base);
                        match c.agent.post(&url).set("X-Client", &c.name).send_json(serde_json::json!({"id": id, "label": "negative"})) {
                            Ok(r) if r.status() == 200 => acked.lock().unwrap().push(id),
                            _ => return,
                        }
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            let pid = server.child.id() as i32;
            // SAFETY-free: the kill command sends SIGKILL.
            std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        });
        drop(server);
        let acked = acked.into_inner().unwrap();
        assert!(!acked.is_empty(), "round {round}: nothing was acknowledged before the kill");
        let server = start_server(&data, &run, &[]);
        let after = server.client("k").stats()["annotated"].as_u64().unwrap();
        assert!(after >= before + acked.len() as u64, "round {round}: {} acknowledged, {} present", acked.len(), after - before);
        let (_, h) = server.client("k").get("/api/history");
        let present: HashSet<u64> = h["labels"].as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect();
        assert!(acked.iter().all(|id| present.contains(id)), "round {round}: an acknowledged annotation was lost");
        server.stop();
    }
}

#[test]
fn a_full_disk_refuses_the_annotation_and_keeps_everything_acknowledged() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 200);
    // Scan once, so the only file that grows afterwards is the journal.
    start_server(&data, &run, &[]).stop();
    let journal_len = std::fs::metadata(run.join("annotations.journal")).unwrap().len();
    // The OS refuses writes beyond this file size (as a full disk would); SIGXFSZ is ignored so the
    // write fails with an error instead of killing the process. With --rescan false nothing else
    // is written.
    let limit = journal_len + 1500;
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize={limit} -- {} --datadir {} --rundir {} --port 0 --rescan false",
            env!("CARGO_BIN_EXE_binann-server"),
            data.display(),
            run.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = binann_testkit::server_url(&mut child).unwrap();
    let c = common::Client { base, name: "full".into(), agent: ureq::AgentBuilder::new().build(), headers: Vec::new() };
    let mut acked = Vec::new();
    let mut refused = None;
    'labelling: for _ in 0..10 {
        for id in c.next(32) {
            let r = c.annotate(id, "negative");
            match r.0 {
                200 => acked.push(id),
                _ => {
                    assert_eq!((r.0, code(&r)), (503, "storage_unavailable"), "{}", r.1);
                    assert!(r.1["error"]["message"].as_str().unwrap().contains("NOT saved"));
                    refused = Some(id);
                    break 'labelling;
                }
            }
        }
    }
    let refused = refused.expect("the size limit was never reached");
    assert!(!acked.is_empty());
    // The server keeps serving, and its counts do not include the refused label.
    assert_eq!(c.stats()["annotated"].as_u64(), Some(acked.len() as u64));
    let _ = child.kill();
    let _ = child.wait();
    // After restarting with room again, every acknowledged label is there and the refused one is not.
    let server = start_server(&data, &run, &[]);
    let (_, h) = server.client("full").get("/api/history");
    let present: Vec<u64> = h["labels"].as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(present, acked);
    assert!(!present.contains(&refused));
}

#[test]
fn cors_is_closed_by_default() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 3);
    let server = start_server(&data, &run, &[]);
    let resp = ureq::get(&format!("{}/api/stats", server.base)).set("Origin", "http://evil.example").call().unwrap();
    assert!(resp.header("Access-Control-Allow-Origin").is_none());
    let preflight = ureq::request("OPTIONS", &format!("{}/api/annotations", server.base))
        .set("Origin", "http://evil.example")
        .set("Access-Control-Request-Method", "POST")
        .call();
    let status = match preflight {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, r)) => {
            assert!(r.header("Access-Control-Allow-Origin").is_none());
            code
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 405, "a cross-origin preflight is not granted");
}

/// A client that sends the same label twice at once (a retry racing its original, as the page's
/// outbox does when an answer is slow) gets one record, and neither answer comes before that
/// record is in the journal on disk.
#[test]
fn a_retry_is_recorded_once_and_answered_only_once_the_label_is_on_disk() {
    use binann_core::annotations::{Event, Record};
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 110);
    let server = start_server(&data, &run, &[]);
    let tab = server.client("tab");
    let on_disk = || -> Vec<Record> {
        binann_core::journal::read_journal::<Record>(&run.join("annotations.journal"), binann_core::codec::FileKind::Annotations)
            .unwrap()
            .records
    };
    for round in 0..100 {
        let id = tab.next(1)[0];
        let (a, b) = std::thread::scope(|s| {
            let first = s.spawn(|| {
                let r = tab.annotate(id, "positive");
                (r, on_disk())
            });
            let second = s.spawn(|| {
                let r = tab.annotate(id, "positive");
                (r, on_disk())
            });
            (first.join().unwrap(), second.join().unwrap())
        });
        for ((status, body), disk) in [&a, &b] {
            assert_eq!(*status, 200, "round {round}: {body}");
            let seq = body["seq"].as_u64().unwrap();
            assert!(disk.iter().any(|r| r.seq == seq), "round {round}: seq {seq} was acknowledged before it was on disk");
        }
        assert_eq!(a.0.1["seq"], b.0.1["seq"], "round {round}: the two copies got different records");
        let copies = on_disk().iter().filter(|r| matches!(r.event, Event::Label { id: i, .. } if u64::from(i) == id)).count();
        assert_eq!(copies, 1, "round {round}: image {id} was recorded {copies} times");
    }
}

/// A flipped byte inside one record loses that record only: the labels after it survive the
/// restart, the damaged file is kept, and the person is told. A journal later cut short (behind
/// the mark the server keeps beside it) is reported too, in the log and in `/api/stats`.
#[test]
fn a_damaged_record_loses_only_itself_and_a_journal_cut_short_is_reported() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 40);
    let server = start_server(&data, &run, &[]);
    let c = server.client("a");
    for id in c.next(5) {
        assert_eq!(c.annotate(id, "negative").0, 200);
    }
    server.stop();
    let journal = run.join("annotations.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    let header = binann_core::codec::HEADER_LEN;
    let first_len = u32::from_le_bytes(bytes[header..header + 4].try_into().unwrap()) as usize;
    let second = header + 8 + first_len;
    bytes[second + 8 + 3] ^= 0x40;
    std::fs::write(&journal, &bytes).unwrap();

    let server = start_server(&data, &run, &[]);
    let c = server.client("a");
    let stats = c.stats();
    assert_eq!(stats["annotated"].as_u64(), Some(4), "the labels after the damaged one are kept: {stats}");
    let problems = stats["journal_problems"].to_string();
    assert!(problems.contains("damaged") && problems.contains("1 record(s)"), "{problems}");
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("journal was damaged"), "{log}");
    let backups: Vec<_> =
        std::fs::read_dir(&run).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("damaged")).collect();
    assert_eq!(std::fs::read(backups[0].path()).unwrap(), bytes, "the damaged file is kept as it was");
    // Labelling goes on after the gap; the mark follows the journal at most every 2 s.
    for id in c.next(10) {
        assert_eq!(c.annotate(id, "negative").0, 200);
    }
    std::thread::sleep(std::time::Duration::from_millis(2_200));
    let id = c.next(1)[0];
    assert_eq!(c.annotate(id, "positive").0, 200);
    assert_eq!(c.stats()["annotated"].as_u64(), Some(15));
    server.stop();
    let mark = binann_core::annotations::JournalMark::load(&run.join("annotations.mark")).unwrap().1;
    assert_eq!(mark.records, 16, "the 5 records written before, then 11");

    // The journal cut at a record boundary, half its records gone: nothing inside it shows it.
    let bytes = std::fs::read(&journal).unwrap();
    let mut at = header;
    for _ in 0..8 {
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    std::fs::write(&journal, &bytes[..at]).unwrap();
    let server = start_server(&data, &run, &[]);
    let stats = server.client("a").stats();
    let problems = stats["journal_problems"].to_string();
    assert!(problems.contains("ends at record 9") && problems.contains("once reached record 16"), "{problems}");
    assert!(server.stderr.lock().unwrap().contains("once reached record 16"));
}
