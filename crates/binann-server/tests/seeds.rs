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

/// A PNG of `width × height` pixels of `color`, all zero but the first byte (`first`): a few
/// hundred KB however large it decodes.
fn blank_png(width: u32, height: u32, color: image::ExtendedColorType, first: u8) -> Vec<u8> {
    use image::ImageEncoder;
    let mut pixels = vec![0u8; width as usize * height as usize * color.bits_per_pixel() as usize / 8];
    pixels[0] = first;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(&pixels, width, height, color).unwrap();
    out
}

/// The most memory the process `pid` has held so far (its peak resident set), in MiB.
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// Posts each of `images` at once, one client each; their replies in order.
fn post_at_once(server: &Server, images: &[Vec<u8>]) -> Vec<Reply> {
    let bodies: Vec<String> = images.iter().map(|i| body(i)).collect();
    let start = std::sync::Barrier::new(bodies.len());
    std::thread::scope(|scope| {
        let threads: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (c, start) = (server.client(&format!("dropper{i}")), &start);
                scope.spawn(move || {
                    start.wait();
                    c.post_json("/api/seeds", b)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

#[test]
fn decompression_bombs_at_once_are_refused_from_their_header() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    make_dataset(&data, 4);
    let server = start_server(&data, &run, &[]);
    // 16,384 × 16,384 grey: 256 MiB decoded, from a file of about a megabyte (260 KB compressed
    // harder).
    let bomb = blank_png(16_384, 16_384, image::ExtendedColorType::L8, 0);
    assert!(bomb.len() < 4 << 20, "{} bytes", bomb.len());
    let before = peak_mib(server.child.id());
    for r in post_at_once(&server, &vec![bomb; 8]) {
        assert_eq!((r.0, code(&r)), (422, "seed_too_large"), "{}", r.1);
        assert!(r.1["error"]["message"].as_str().unwrap().contains("16384x16384"), "the message names the size: {}", r.1);
    }
    let peak = peak_mib(server.child.id());
    println!("server peak memory: {before} MiB before the bombs, {peak} MiB after");
    // Eight decodes at once took the server past 2 GiB; refused from the header, it stays small.
    assert!(peak < 1024, "the server's peak memory reached {peak} MiB");
    assert!(kept(&run).is_empty());

    // Wider than the trainer reads, though tiny: refused, or the trainer would fail every round.
    let r = server.client("c").post_json("/api/seeds", &body(&blank_png(20_000, 1, image::ExtendedColorType::L8, 0)));
    assert_eq!((r.0, code(&r)), (422, "seed_too_large"), "{}", r.1);
    assert!(kept(&run).is_empty());
}

#[test]
fn large_seeds_at_once_are_decoded_a_few_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    make_dataset(&data, 4);
    let server = start_server(&data, &run, &[]);
    // Eight different seeds as large as a seed may be: 8,192 × 8,192 RGBA, 256 MiB decoded each.
    let images: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let threads: Vec<_> =
            (0..8u8).map(|i| scope.spawn(move || blank_png(8_192, 8_192, image::ExtendedColorType::Rgba8, i + 1))).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for r in post_at_once(&server, &images) {
        assert_eq!((r.0, &r.1["added"]), (200, &serde_json::json!(true)), "{}", r.1);
    }
    assert_eq!(kept(&run).len(), 8);
    let peak = peak_mib(server.child.id());
    println!("server peak memory after eight 256 MiB decodes: {peak} MiB");
    // All at once would be 2 GiB; two at a time, 512 MiB and the rest of the server.
    assert!(peak < 1024, "the server's peak memory reached {peak} MiB");
}

#[test]
fn past_the_folder_budget_nothing_is_written_and_a_killed_writes_leftovers_go() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    make_dataset(&data, 4);
    start_server(&data, &run, &[]).stop();
    let seeds = run.join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    // A seed image already there (sparse: it counts its full length and takes no disk), and the
    // temp file of a write killed two minutes ago.
    let big = seeds.join(format!("{:016x}.png", 1));
    std::fs::File::create(&big).unwrap().set_len(binann_core::seeds::MAX_SEEDS_TOTAL_BYTES - 100).unwrap();
    let leftover = seeds.join(format!(".{:016x}.png.x1y2z3{}", 2, binann_core::atomic::TEMP_SUFFIX));
    std::fs::write(&leftover, b"half an image").unwrap();
    let two_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::options().write(true).open(&leftover).unwrap().set_modified(two_minutes_ago).unwrap();

    let server = start_server(&data, &run, &[]);
    assert!(!leftover.exists(), "the leftover is removed when the server starts");
    let c = server.client("seeder");
    let r = c.post_json("/api/seeds", &body(&png(10)));
    assert_eq!((r.0, code(&r)), (409, "seed_folder_full"), "{}", r.1);
    let names: Vec<_> = std::fs::read_dir(&seeds).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(names, vec![big.clone()], "nothing written, no temp file left");
    assert_eq!(c.stats()["seed_images"], 1);
}
