//! Seed images through the server: `POST /api/seeds` (files dropped on the page) and
//! `--seed-images DIR`. What is kept in `RUNDIR/seeds` is what the trainer learns from.

mod common;

use base64::Engine;
use common::*;

fn png(shade: u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(16, 16, |x, _| image::Luma([shade.wrapping_add(x as u8)]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn body(bytes: &[u8]) -> String {
    serde_json::json!({ "data": base64::engine::general_purpose::STANDARD.encode(bytes) }).to_string()
}

fn kept(run: &std::path::Path) -> Vec<Vec<u8>> {
    binann_core::seeds::list(&run.join("seeds")).iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn dropped_images_are_kept_once_and_anything_else_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    make_dataset(&data, 4);
    let server = start_server(&data, &run, &[]);
    let c = server.client("seeder");
    assert_eq!(c.stats()["seed_images"], 0);

    let (status, answer) = c.post_json("/api/seeds", &body(&png(10)));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, serde_json::json!({ "added": true, "seed_images": 1 }));
    assert_eq!(kept(&run), vec![png(10)], "the bytes are kept as given");
    let again = c.post_json("/api/seeds", &body(&png(10)));
    assert_eq!(again, (200, serde_json::json!({ "added": false, "seed_images": 1 })), "the same image is kept once");
    assert_eq!(c.post_json("/api/seeds", &body(&png(99))).1["seed_images"], 2);
    assert_eq!(c.stats()["seed_images"], 2);

    // Not an image, a truncated one, not base64, not JSON, or sent as a form: refused, nothing kept.
    let r = c.post_json("/api/seeds", &body(b"hello, not an image"));
    assert_eq!((r.0, code(&r)), (422, "not_an_image"), "{}", r.1);
    let truncated = &png(50)[..40];
    let r = c.post_json("/api/seeds", &body(truncated));
    assert_eq!((r.0, code(&r)), (422, "not_an_image"), "{}", r.1);
    let r = c.post_json("/api/seeds", r#"{"data": "***"}"#);
    assert_eq!((r.0, code(&r)), (400, "bad_request"), "{}", r.1);
    let r = c.post_json("/api/seeds", r#"{"data": "", "path": "../../etc/passwd"}"#);
    assert_eq!((r.0, code(&r)), (400, "bad_request"), "no name from the client is accepted: {}", r.1);
    let r = c.send("POST", "/api/seeds", &[("Content-Type", "text/plain")], &body(&png(7)));
    assert_eq!((r.0, code(&r)), (403, "cross_site"), "{}", r.1);
    let r = c.send("GET", "/api/seeds", &[], "");
    assert_eq!(r.0, 405);
    assert_eq!(kept(&run).len(), 2);

    // Larger than a seed image may be: a clean 413.
    let huge = format!(r#"{{"data": "{}"}}"#, "A".repeat(binann_server::seeds::MAX_BODY_BYTES + 1024));
    let r = c.post_json("/api/seeds", &huge);
    assert_eq!((r.0, code(&r)), (413, "payload_too_large"), "{}", r.1);

    // They stay across a restart, and count again.
    server.stop();
    let server = start_server(&data, &run, &[]);
    assert_eq!(server.client("seeder").stats()["seed_images"], 2);
    assert_eq!(std::fs::read_dir(run.join("seeds")).unwrap().count(), 2, "no temp file left behind");
}

#[test]
fn seed_images_folder_is_copied_in_at_start_and_a_bad_one_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, examples) = (tmp.path().join("data"), tmp.path().join("run"), tmp.path().join("examples"));
    make_dataset(&data, 4);
    std::fs::create_dir_all(examples.join("more")).unwrap();
    std::fs::write(examples.join("a.png"), png(1)).unwrap();
    std::fs::write(examples.join("more/b.PNG"), png(2)).unwrap();
    std::fs::write(examples.join("broken.jpg"), b"not a jpeg").unwrap();
    std::fs::write(examples.join("notes.txt"), b"text").unwrap();
    let arg = ["--seed-images", examples.to_str().unwrap()];

    let server = start_server(&data, &run, &arg);
    assert_eq!(server.client("c").stats()["seed_images"], 2, "two images; the broken one is left out");
    let mut want = vec![png(1), png(2)];
    want.sort();
    let mut got = kept(&run);
    got.sort();
    assert_eq!(got, want);
    // stderr is read by another thread: wait for the line rather than race it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.stderr.lock().unwrap().contains("broken.jpg") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("leaving out") && log.contains("broken.jpg"), "the left-out file is named: {log}");
    server.stop();
    // The same folder again adds nothing.
    let server = start_server(&data, &run, &arg);
    assert_eq!(server.client("c").stats()["seed_images"], 2);
    server.stop();

    let missing = tmp.path().join("nowhere");
    let err = try_start_server(&data, &run, &["--seed-images", missing.to_str().unwrap()]).err().expect("must not start");
    assert!(err.1.contains("no such folder"), "{}", err.1);
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("bad.png"), b"nope").unwrap();
    let err = try_start_server(&data, &run, &["--seed-images", empty.to_str().unwrap()]).err().expect("must not start");
    assert!(err.1.contains("no readable image"), "{}", err.1);
}
