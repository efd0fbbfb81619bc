//! The cross-site check against every spelling of the state-changing routes' paths: percent-encoded
//! letters, doubled or trailing slashes, other case, dot segments, the absolute form. Each request
//! is written to the socket byte for byte, as a browser or `curl --path-as-is` can send it, and
//! must be refused (or reach no route) and change nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;
use common::{make_dataset, start_server};

/// Every route that changes what the server holds (`crate::configure`): the POST routes and
/// `GET /api/next`, which reserves images for the asking client; with a body that the handler
/// would accept.
fn state_changing_routes(seed_png: &str) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("GET", "/api/next", String::new()),
        ("POST", "/api/annotations", r#"{"id": 5, "label": "positive"}"#.to_owned()),
        ("POST", "/api/undo", String::new()),
        ("POST", "/api/similar", r#"{"id": 5, "count": 4}"#.to_owned()),
        ("POST", "/api/seeds", format!(r#"{{"data": "{seed_png}"}}"#)),
    ]
}

/// The path as actix's router sees it: `%XX` decoded except `%2F`, `%25` and `%2B`.
fn routed(target: &str) -> String {
    let mut out = Vec::new();
    let bytes = target.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match hex {
            Some(b) if bytes[i] == b'%' && !b"/%+".contains(&b) => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Spellings of `path` a client can send: each letter percent-encoded (upper- and lower-case
/// hex), everything encoded, an encoded slash, doubled and trailing slashes, other case, dot
/// segments, a suffix the router does not strip.
fn spellings(path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    for (i, c) in path.char_indices().filter(|(_, c)| *c != '/') {
        for encoded in [format!("%{:02X}", c as u8), format!("%{:02x}", c as u8)] {
            out.push(format!("{}{encoded}{}", &path[..i], &path[i + 1..]));
        }
    }
    out.push(path.chars().map(|c| if c == '/' { "/".to_owned() } else { format!("%{:02X}", c as u8) }).collect());
    // The leading slash stays: a target without it is no request at all (400).
    for (i, _) in path.match_indices('/').skip(1) {
        for replacement in ["%2F", "%2f", "//"] {
            out.push(format!("{}{replacement}{}", &path[..i], &path[i + 1..]));
        }
    }
    let (dir, leaf) = path.rsplit_once('/').unwrap();
    out.extend([
        format!("{path}/"),
        format!("{path}//"),
        format!("/{path}"),
        path.to_ascii_uppercase(),
        format!("{dir}/{}", leaf.to_ascii_uppercase()),
        format!("{dir}/./{leaf}"),
        format!("{dir}/%2E/{leaf}"),
        format!("{dir}/x/../{leaf}"),
        format!("{dir}/x/%2E%2E/{leaf}"),
        format!("{path}%3F"),
        format!("{path};x"),
        format!("{path}%20"),
    ]);
    out
}

/// Sends one request exactly as given and returns its status.
fn raw(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Client: attacker\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    // A refused request's body is never read, and the server may reset the connection after its
    // answer: keep what arrived before the reset.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok());
    status.unwrap_or_else(|| panic!("no HTTP answer to {method} {target}: {answer:?}"))
}

#[test]
fn no_spelling_of_a_state_changing_route_gets_past_the_cross_site_check() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    let images = 10;
    make_dataset(&data, images);
    let server = start_server(&data, &run, &[]);
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    // Something to undo, so that an undo that got through would show in the journal.
    let tab = server.client("tab");
    let labelled = tab.next(2);
    for id in &labelled {
        assert_eq!(tab.annotate(*id, "negative").0, 200);
    }
    let journal = || std::fs::read(run.join("annotations.journal")).unwrap();
    let seeds = || std::fs::read_dir(run.join("seeds")).map_or(0, |d| d.count());
    let (journal_before, stats_before, seeds_before) = (journal(), tab.stats(), seeds());

    let mut png = Vec::new();
    image::GrayImage::from_pixel(16, 16, image::Luma([200u8]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let seed_png = base64::engine::general_purpose::STANDARD.encode(&png);
    let evil = [("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")];
    let mut sent = 0;
    for (method, path, body) in state_changing_routes(&seed_png) {
        // What another site's page can make a browser send: with Origin and Sec-Fetch-Site, and
        // for a POST a text/plain body (no CORS preflight), or JSON (the browser asks first).
        let shapes: Vec<Vec<(&str, &str)>> = if method == "GET" {
            vec![evil.to_vec(), vec![evil[0]], vec![evil[1]]]
        } else {
            vec![
                [&evil[..], &[("Content-Type", "application/json")]].concat(),
                [&evil[..], &[("Content-Type", "text/plain;charset=UTF-8")]].concat(),
                vec![("Content-Type", "text/plain")],
            ]
        };
        let mut targets: Vec<String> =
            spellings(path).into_iter().map(|p| if method == "GET" { format!("{p}?count=32") } else { p }).collect();
        // The absolute form of the request target: the router routes on its path.
        targets.extend([format!("http://{addr}{}", targets[1]), format!("http://{addr}{}", targets[0])]);
        for target in &targets {
            let reaches_the_route = routed(target.split('?').next().unwrap()).trim_start_matches(&format!("http://{addr}")) == path;
            for headers in &shapes {
                let status = raw(&addr, method, target, headers, &body);
                sent += 1;
                if reaches_the_route {
                    assert_eq!(status, 403, "{method} {target} with {headers:?}");
                } else {
                    assert!([403, 404].contains(&status), "{method} {target} with {headers:?}: {status}");
                }
            }
        }
    }
    assert!(sent > 300, "{sent} requests");

    assert_eq!(journal(), journal_before, "a cross-site request labelled or undid");
    assert_eq!(seeds(), seeds_before, "a cross-site request added a seed image");
    assert_eq!(tab.stats(), stats_before);
    // Nothing was held for the attacker: a new client gets every unlabelled image.
    let fresh = server.client("fresh");
    let unlabelled = images - labelled.len();
    assert_eq!(fresh.next(32).len(), unlabelled, "a cross-site request held images");
    // And the spellings did reach the handler when the request was not cross-site: a script's
    // encoded request holds images (the fresh client gives back all but one first).
    assert_eq!(fresh.next(1).len(), 1);
    assert_eq!(raw(&addr, "GET", "/api/%6Eext?count=3", &[], ""), 200);
    assert_eq!(server.client("later").next(32).len(), unlabelled - 1 - 3, "the encoded path reaches /api/next");
}
