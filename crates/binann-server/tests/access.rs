//! Who may label, against the real binary: cross-site requests refused and changing nothing, the
//! access token beyond loopback, and the annotators' names from the request to the journal.

mod common;

use binann_core::annotations::{Event, Record};
use binann_core::codec::FileKind;
use binann_core::journal;
use common::{Client, Reply, Server, code, make_dataset, start_server, try_start_server, try_start_server_with_env};

fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    (tmp, data, run)
}

fn journal_bytes(server: &Server) -> Vec<u8> {
    std::fs::read(server.rundir.join("annotations.journal")).unwrap()
}

fn records(run: &std::path::Path) -> Vec<Record> {
    journal::read_journal::<Record>(&run.join("annotations.journal"), FileKind::Annotations).unwrap().records
}

/// Request headers, as (name, value).
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// The status and error code of a reply.
fn refusal(r: &Reply) -> (u16, &str) {
    (r.0, code(r))
}

#[test]
fn cross_site_requests_to_every_state_changing_route_are_refused_and_change_nothing() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 10);
    let server = start_server(&data, &run, &[]);
    let tab = server.client("tab");
    let ids = tab.next(3);
    assert_eq!(tab.annotate(ids[0], "positive").0, 200);
    assert_eq!(tab.annotate(ids[1], "negative").0, 200);
    let journal_before = journal_bytes(&server);
    let stats_before = tab.stats();

    let label = format!(r#"{{"id": {}, "label": "positive"}}"#, ids[2]);
    let form = format!("id={}&label=positive", ids[2]);
    let multipart = format!("--x\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\n{}\r\n--x--\r\n", ids[2]);
    let json = ("Content-Type", "application/json");
    let evil_same_port = format!("http://evil.example:{}", port(&server));
    // Each shape a page on another site can make a browser send (or a browser says it did).
    let shapes: Vec<(&str, Headers, &str)> = vec![
        ("text/plain body", vec![("Content-Type", "text/plain;charset=UTF-8")], &label),
        ("form-encoded body", vec![("Content-Type", "application/x-www-form-urlencoded")], &form),
        ("multipart form", vec![("Content-Type", "multipart/form-data; boundary=x")], &multipart),
        ("body without a content type", vec![], &label),
        ("foreign Origin", vec![json, ("Origin", "http://evil.example")], &label),
        ("foreign Origin on this server's port", vec![json, ("Origin", &evil_same_port)], &label),
        ("opaque Origin", vec![json, ("Origin", "null")], &label),
        ("Sec-Fetch-Site: cross-site", vec![json, ("Sec-Fetch-Site", "cross-site")], &label),
        ("Sec-Fetch-Site: same-site", vec![json, ("Sec-Fetch-Site", "same-site")], &label),
        ("text/plain from a foreign Origin", vec![("Content-Type", "text/plain"), ("Origin", "http://evil.example")], &label),
    ];
    for (route, method) in [("/api/annotations", "POST"), ("/api/undo", "POST")] {
        for (shape, headers, body) in &shapes {
            let r = tab.send(method, route, headers, body);
            assert_eq!(refusal(&r), (403, "cross_site"), "{method} {route} with a {shape}: {}", r.1);
            assert!(r.1["error"]["message"].as_str().is_some_and(|m| m.contains("nothing was changed")), "{}", r.1);
        }
    }
    // /api/next reserves images for whoever asks: another site may not make it do so.
    for headers in [vec![("Origin", "http://evil.example")], vec![("Sec-Fetch-Site", "cross-site")]] {
        assert_eq!(refusal(&tab.send("GET", "/api/next?count=5", &headers, "")), (403, "cross_site"), "{headers:?}");
    }
    assert_eq!(journal_bytes(&server), journal_before, "a refused request reached the journal");
    assert_eq!(tab.stats(), stats_before);

    // What binann's own page sends passes: JSON, its own origin, same-origin.
    let own_origin = server.base.clone();
    let page = [json, ("Origin", own_origin.as_str()), ("Sec-Fetch-Site", "same-origin")];
    let r = tab.send("POST", "/api/annotations", &page, &label);
    assert_eq!(r.0, 200, "the page's own request was refused: {}", r.1);
    // Behind a reverse proxy (TLS ended there, the Host rewritten), the forwarded host counts.
    let proxied = [json, ("Origin", "https://labels.example.org"), ("X-Forwarded-Host", "labels.example.org")];
    let r = tab.send("POST", "/api/undo", &proxied, "");
    assert_eq!((r.0, r.1["id"].as_u64()), (200, Some(ids[2])), "{}", r.1);
    // The undo stack was not touched by the refused undos: the next undo is of ids[1].
    assert_eq!(tab.undo().1["id"].as_u64(), Some(ids[1]));
    // Scripts send neither Origin nor Sec-Fetch-Site, and an undo needs no body.
    assert_eq!(tab.send("POST", "/api/undo", &[], "").1["id"].as_u64(), Some(ids[0]));
}

#[test]
fn a_loopback_server_without_a_token_answers_only_requests_addressed_to_loopback() {
    // DNS rebinding: evil.example resolves to 127.0.0.1 after its page loads, so its requests are
    // same-origin for the browser (Origin and Host both evil.example) and pass the cross-site check.
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 4);
    let server = start_server(&data, &run, &[]);
    let tab = server.client("tab");
    let rebound = format!("evil.example:{}", port(&server));
    let origin = format!("http://{rebound}");
    let label = r#"{"id": 0, "label": "positive"}"#;
    let json = ("Content-Type", "application/json");
    for (method, path, body) in [("GET", "/api/stats", ""), ("GET", "/api/images/0", ""), ("POST", "/api/annotations", label)] {
        let r = tab.send(method, path, &[json, ("Host", &rebound), ("Origin", &origin), ("Sec-Fetch-Site", "same-origin")], body);
        assert_eq!(refusal(&r), (403, "cross_site"), "{method} {path} addressed to {rebound}: {}", r.1);
    }
    assert!(records(&run).is_empty(), "a rebound request reached the journal");
    for host in [format!("localhost:{}", port(&server)), format!("127.0.0.1:{}", port(&server))] {
        let r = tab.send("GET", "/api/stats", &[("Host", &host)], "");
        assert_eq!(r.0, 200, "Host {host}: {}", r.1);
    }
}

#[test]
fn without_a_token_beyond_loopback_only_addresses_localhost_and_allowed_names_are_answered() {
    // With --no-auth on 0.0.0.0 a rebound name reaches the server as easily as on loopback.
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 4);
    let env = [("BINANN_ALLOWED_HOSTS", "labelbox.lan, Labels.Example.org")];
    let server = try_start_server_with_env(&data, &run, &["--host", "0.0.0.0", "--no-auth"], &env).unwrap();
    let tab = server.client("tab");
    let p = port(&server);
    let json = ("Content-Type", "application/json");
    let label = r#"{"id": 0, "label": "positive"}"#;
    for name in ["rebound.example", "labelbox.lan.rebound.example", "lan"] {
        let host = format!("{name}:{p}");
        let origin = format!("http://{host}");
        let same_origin = [json, ("Host", host.as_str()), ("Origin", origin.as_str()), ("Sec-Fetch-Site", "same-origin")];
        for (method, path, body) in [
            ("GET", "/api/stats", ""),
            ("GET", "/api/images/0", ""),
            ("GET", "/api/next?count=32", ""),
            ("POST", "/api/annotations", label),
            ("GET", "/", ""),
        ] {
            let r = tab.send(method, path, &same_origin, body);
            assert_eq!(refusal(&r), (403, "cross_site"), "{method} {path} addressed to {host}: {}", r.1);
        }
    }
    assert!(records(&run).is_empty(), "a rebound request reached the journal");
    assert_eq!(tab.next(32).len(), 4, "a rebound request held images");
    for host in ["labelbox.lan", "LABELBOX.LAN", "labels.example.org", "127.0.0.1", "localhost", "192.0.2.7", "[::1]", "[2001:db8::7]"] {
        let host = format!("{host}:{p}");
        let r = tab.send("GET", "/api/stats", &[("Host", &host)], "");
        assert_eq!(r.0, 200, "Host {host}: {}", r.1);
    }
    // The page reached by an allowed name works as on its own origin.
    let host = format!("labelbox.lan:{p}");
    let origin = format!("http://{host}");
    let page = [json, ("Host", host.as_str()), ("Origin", origin.as_str()), ("Sec-Fetch-Site", "same-origin")];
    assert_eq!(tab.send("POST", "/api/annotations", &page, label).0, 200);
    server.stop();

    // On loopback the allowed names are answered beside the loopback ones; other addresses are not.
    let server = start_server(&data, &run, &["--allowed-hosts", "labelbox.lan"]);
    let tab = server.client("tab");
    let p = port(&server);
    for (host, status) in [("labelbox.lan", 200), ("localhost", 200), ("192.0.2.7", 403), ("rebound.example", 403)] {
        let host = format!("{host}:{p}");
        assert_eq!(tab.send("GET", "/api/stats", &[("Host", &host)], "").0, status, "Host {host}");
    }
}

#[test]
fn the_token_cookie_is_secure_when_the_page_is_served_over_https() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 2);
    let given = "a-given-token-0123456789";
    let server = start_server(&data, &run, &["--token", given]);
    let c = server.client("browser");
    let set_cookie = |headers: &[(&str, &str)]| {
        let mut request = c.request("GET", &format!("/?token={given}"));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let response = request.call().unwrap();
        assert_eq!(response.status(), 303, "{headers:?}");
        response.header("Set-Cookie").unwrap().to_owned()
    };
    let secure = |cookie: &str| cookie.split(';').any(|attribute| attribute.trim().eq_ignore_ascii_case("secure"));
    for plain in [vec![], vec![("X-Forwarded-Proto", "http")]] {
        let cookie = set_cookie(&plain);
        assert!(!secure(&cookie), "over plain HTTP ({plain:?}) a Secure cookie would be dropped: {cookie}");
    }
    for proxy in
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "HTTPS"), ("Forwarded", "for=192.0.2.1;proto=https;host=labels.example.org")]
    {
        let cookie = set_cookie(&[proxy]);
        assert!(secure(&cookie), "behind a TLS proxy ({proxy:?}): {cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    }
    // With a token the name the server is reached by does not matter: the token keeps others out.
    let bearer = format!("Bearer {given}");
    assert_eq!(call(&c, "GET", "/api/stats", "", &[("Host", "rebound.example"), ("Authorization", &bearer)]), 200);
}

fn port(server: &Server) -> &str {
    server.base.rsplit(':').next().unwrap()
}

/// Every API and image route, as (method, path, JSON body).
fn api_routes() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("GET", "/api/next?count=2", ""),
        ("GET", "/api/stats", ""),
        ("GET", "/api/history", ""),
        ("GET", "/api/images/0", ""),
        ("POST", "/api/annotations", r#"{"id": 1, "label": "positive"}"#),
        ("POST", "/api/undo", "{}"),
        ("GET", "/api/no-such-route", ""),
    ]
}

fn call(c: &Client, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> u16 {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    c.send(method, path, &headers, body).0
}

#[test]
fn beyond_loopback_every_api_and_image_route_needs_the_token() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 6);
    let server = start_server(&data, &run, &["--host", "0.0.0.0"]);
    let token = server.printed_token().expect("a token generated and printed");
    assert_eq!(token.len(), 64, "{token}");
    assert!(server.stdout.lock().unwrap().contains(&format!("http://127.0.0.1:{}/?token={token}", port(&server))));
    let c = server.client("script");
    let journal_before = journal_bytes(&server);

    let wrong_same_length = format!("{}{}", &token[..63], if token.ends_with('0') { '1' } else { '0' });
    let cookie = |t: &str| format!("binann_token_{}={t}", port(&server));
    let refused: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no token", vec![]),
        ("a wrong bearer token", vec![("Authorization", "Bearer not-the-token-at-all".into())]),
        ("a bearer token one character off", vec![("Authorization", format!("Bearer {wrong_same_length}"))]),
        ("the token's first half", vec![("Authorization", format!("Bearer {}", &token[..32]))]),
        ("the token under another scheme", vec![("Authorization", format!("Basic {token}"))]),
        ("a wrong cookie", vec![("Cookie", cookie(&wrong_same_length))]),
        ("the token in another port's cookie", vec![("Cookie", format!("binann_token_1={token}"))]),
        ("the token in the query", vec![]),
    ];
    for (what, headers) in &refused {
        for (method, path, body) in api_routes() {
            let path = if *what == "the token in the query" {
                format!("{path}{}token={token}", if path.contains('?') { '&' } else { '?' })
            } else {
                path.to_owned()
            };
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let mut all = vec![("Content-Type", "application/json")];
            all.extend(headers);
            let r = c.send(method, &path, &all, body);
            assert_eq!(refusal(&r), (401, "unauthorized"), "{method} {path} with {what}: {}", r.1);
        }
    }
    let resp = ureq::get(&format!("{}/api/stats", server.base)).call().unwrap_err();
    let ureq::Error::Status(401, resp) = resp else { panic!("{resp}") };
    assert_eq!(resp.header("WWW-Authenticate"), Some("Bearer realm=\"binann\""));
    assert_eq!(journal_bytes(&server), journal_before, "a request without the token changed something");
    // The page and the health check load without it (the page then says what is missing).
    for path in binann_server::web_assets::paths().chain(["/health".to_owned()]) {
        assert_eq!(c.get(&path).0, 200, "{path}");
    }
    assert!(binann_server::web_assets::paths().any(|p| p == "/main.mjs"), "the page's modules are public");

    // The right token as a bearer header: every route works.
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    for (method, path, body) in api_routes() {
        let expected = if path.contains("no-such-route") { 404 } else { 200 };
        assert_eq!(call(&c, method, path, body, &auth), expected, "{method} {path} with the right bearer token");
    }
    let image = c.request("GET", "/api/images/0").set("Authorization", &bearer).call().unwrap();
    assert_eq!(image.content_type(), "image/png");

    // The right token through the page's first visit: a cookie, then every route works with it.
    let visit = c.request("GET", &format!("/?token={token}")).call().unwrap();
    assert_eq!((visit.status(), visit.header("Location")), (303, Some("/")));
    let set_cookie = visit.header("Set-Cookie").unwrap().to_owned();
    assert!(set_cookie.starts_with(&cookie(&token)), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing: {set_cookie}");
    }
    let with_cookie = [("Cookie", cookie(&token))];
    let with_cookie: Vec<(&str, &str)> = with_cookie.iter().map(|(n, v)| (*n, v.as_str())).collect();
    for (method, path, body) in api_routes() {
        let expected = if path.contains("no-such-route") { 404 } else { 200 };
        assert_eq!(call(&c, method, path, body, &with_cookie), expected, "{method} {path} with the token cookie");
    }
    // A wrong token in the URL sets no cookie: the page loads and the API still says 401.
    let wrong = c.request("GET", &format!("/?token={wrong_same_length}")).call().unwrap();
    assert_eq!((wrong.status(), wrong.header("Set-Cookie")), (200, None));

    // After a restart the generated token is a new one: the old one is stale.
    assert_eq!(call(&c, "POST", "/api/annotations", r#"{"id": 2, "label": "positive"}"#, &auth), 200);
    server.stop();
    let server = start_server(&data, &run, &["--host", "0.0.0.0"]);
    let fresh = server.printed_token().unwrap();
    assert_ne!(fresh, token);
    let c = server.client("script");
    assert_eq!(call(&c, "GET", "/api/stats", "", &[("Authorization", &format!("Bearer {token}"))]), 401, "a stale token");
    let stats = c.request("GET", "/api/stats").set("Authorization", &format!("Bearer {fresh}")).call().unwrap();
    let stats: serde_json::Value = stats.into_json().unwrap();
    assert_eq!(stats["positives"].as_u64(), Some(1), "labels given with the token were kept");
}

#[test]
fn a_given_token_is_used_as_is_and_required_even_on_loopback() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 3);
    let given = "lab-2026_token.for~everyone";
    let server = try_start_server_with_env(&data, &run, &["--host", "0.0.0.0"], &[("BINANN_TOKEN", given)]).unwrap();
    assert_eq!(server.printed_token().as_deref(), Some(given));
    let c = server.client("s");
    assert_eq!(call(&c, "GET", "/api/stats", "", &[]), 401);
    assert_eq!(call(&c, "GET", "/api/stats", "", &[("Authorization", &format!("bearer {given}"))]), 200);
    server.stop();
    let server = start_server(&data, &run, &["--token", given]);
    let c = server.client("s");
    assert_eq!(call(&c, "GET", "/api/stats", "", &[]), 401, "a token given on loopback is required there too");
    assert_eq!(call(&c, "GET", "/api/stats", "", &[("Authorization", &format!("Bearer {given}"))]), 200);
}

#[test]
fn beyond_loopback_without_a_token_the_server_refuses_to_start_unless_no_auth() {
    let (tmp, data, run) = dirs();
    make_dataset(&data, 3);
    for env in [vec![], vec![("BINANN_TOKEN", "")]] {
        let extra: &[&str] = if env.is_empty() { &["--host", "0.0.0.0", "--token", ""] } else { &["--host", "0.0.0.0"] };
        let (status, stderr) = try_start_server_with_env(&data, &run, extra, &env).err().expect("must refuse to start");
        assert_eq!(status, Some(2));
        for why in ["0.0.0.0", "token set empty", "anyone who can reach it", "--no-auth"] {
            assert!(stderr.contains(why), "{why:?} not in: {stderr}");
        }
        assert!(!run.exists(), "a refusal must change nothing, yet the run directory was created");
    }
    let (_, stderr) = try_start_server(&data, &run, &["--host", "0.0.0.0", "--token", "short"]).err().expect("a short token");
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
    let (_, stderr) =
        try_start_server(&data, &run, &["--host", "0.0.0.0", "--token", "0123456789abcdef", "--no-auth"]).err().expect("both");
    assert!(stderr.contains("contradict"), "{stderr}");

    // Told explicitly: it serves without a token, and says so.
    let server = start_server(&data, &run, &["--host", "0.0.0.0", "--token", "", "--no-auth"]);
    assert_eq!(server.client("s").annotate(0, "positive").0, 200);
    assert!(server.stdout.lock().unwrap().is_empty(), "no token URL to print");
    assert!(
        (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            server.stderr.lock().unwrap().contains("without an access token")
        }),
        "no warning: {}",
        server.stderr.lock().unwrap()
    );
    server.stop();
    let server = try_start_server_with_env(&data, &tmp.path().join("run2"), &["--host", "0.0.0.0"], &[("BINANN_NO_AUTH", "true")]).unwrap();
    assert_eq!(server.client("s").get("/api/stats").0, 200);
}

#[test]
fn annotator_names_reach_the_journal_and_the_stats_and_survive_a_restart() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 10);
    let server = start_server(&data, &run, &[]);
    // Two tabs of one person (the page percent-encodes the name), another person, and a script
    // that gives no name.
    let ana1 = server.client("ana-tab-1").with("X-Annotator", "Ana%20Mar%C3%ADa");
    let ana2 = server.client("ana-tab-2").with("X-Annotator", "Ana%20Mar%C3%ADa");
    let bob = server.client("bob").with("X-Annotator", "bob");
    let nobody = server.client("script");
    assert_eq!(ana1.annotate(0, "positive").0, 200);
    assert_eq!(ana2.annotate(1, "negative").0, 200);
    assert_eq!(ana2.annotate(2, "skip").0, 200);
    assert_eq!(bob.annotate(3, "negative").0, 200);
    assert_eq!(bob.annotate(4, "positive").0, 200);
    assert_eq!(nobody.annotate(5, "negative").0, 200);
    // Undo stays per tab: ana's second tab undoes its own last label, not the first tab's.
    assert_eq!(ana2.undo().1["id"].as_u64(), Some(2));
    let bad = server.client("x").with("X-Annotator", "%E2%28");
    assert_eq!(refusal(&bad.annotate(6, "positive")), (400, "invalid_annotator"));

    let expected = serde_json::json!([
        { "name": "Ana María", "annotated": 2, "positives": 1, "negatives": 1, "skipped": 0 },
        { "name": "bob", "annotated": 2, "positives": 1, "negatives": 1, "skipped": 0 },
        { "name": "", "annotated": 1, "positives": 0, "negatives": 1, "skipped": 0 },
    ]);
    assert_eq!(nobody.stats()["annotators"], expected);
    server.stop();

    let by_id: Vec<(u32, String)> = records(&run)
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Label { id, .. } => Some((id, r.annotator)),
            Event::Undo { .. } => None,
        })
        .collect();
    let names = |n: &[(u32, &str)]| n.iter().map(|(id, a)| (*id, a.to_string())).collect::<Vec<_>>();
    assert_eq!(by_id, names(&[(0, "Ana María"), (1, "Ana María"), (2, "Ana María"), (3, "bob"), (4, "bob"), (5, "")]));

    let server = start_server(&data, &run, &[]);
    assert_eq!(server.client("later").stats()["annotators"], expected, "a restart keeps the names");
}

#[test]
fn a_journal_of_format_version_1_is_served_and_upgraded() {
    let (_tmp, data, run) = dirs();
    make_dataset(&data, 8);
    // A run directory as the previous binann left it: manifest and a version-1 journal.
    start_server(&data, &run, &[]).stop();
    let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../binann-core/tests/fixtures/annotations-v1.journal")).unwrap();
    std::fs::write(run.join("annotations.journal"), &fixture).unwrap();

    let server = start_server(&data, &run, &[]);
    let c = server.client("tab-c").with("X-Annotator", "carol");
    let s = c.stats();
    assert_eq!((s["positives"].as_u64(), s["negatives"].as_u64(), s["skipped"].as_u64()), (Some(1), Some(2), Some(1)), "{s}");
    assert_eq!(c.annotate(6, "positive").0, 200);
    // The old records' clients keep their undo stacks.
    assert_eq!(server.client("tab-a").undo().1["id"].as_u64(), Some(4));
    let backups: Vec<_> =
        std::fs::read_dir(&run).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("annotations.v1-")).collect();
    assert_eq!(backups.len(), 1, "the version-1 journal is kept aside");
    assert_eq!(std::fs::read(backups[0].path()).unwrap(), fixture);
    server.stop();

    let server = start_server(&data, &run, &[]);
    let s = server.client("x").stats();
    assert_eq!((s["positives"].as_u64(), s["negatives"].as_u64()), (Some(2), Some(1)), "{s}");
    assert_eq!(
        s["annotators"],
        serde_json::json!([
            { "name": "", "annotated": 2, "positives": 1, "negatives": 1, "skipped": 1 },
            { "name": "carol", "annotated": 1, "positives": 1, "negatives": 0, "skipped": 0 },
        ])
    );
    let records = records(&run);
    assert_eq!(records.len(), 8);
    assert_eq!(records[6].annotator, "carol");
}
