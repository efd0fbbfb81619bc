//! Helpers for the server's integration tests: generated datasets and a real server process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Writes `n` small distinct PNG images (some in a subfolder) and returns their count.
pub fn make_dataset(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..n {
        let img = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([((i * 7 + x as usize * 3 + y as usize) % 256) as u8]));
        let rel = if i % 2 == 0 { format!("img{i:04}.png") } else { format!("sub/img{i:04}.PNG") };
        img.save_with_format(dir.join(rel), image::ImageFormat::Png).unwrap();
    }
}

/// A running `binann-server` process.
pub struct Server {
    pub child: Child,
    /// Where to reach it: its address, with 0.0.0.0 (listening everywhere) replaced by 127.0.0.1.
    pub base: String,
    pub datadir: PathBuf,
    pub rundir: PathBuf,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// What it printed after the "listening on" line (the token URL, when there is one).
    pub stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Starts the server binary on 127.0.0.1:0 and waits until it listens.
pub fn start_server(datadir: &Path, rundir: &Path, extra: &[&str]) -> Server {
    try_start_server(datadir, rundir, extra).unwrap_or_else(|(code, err)| panic!("server exited ({code:?}): {err}"))
}

/// Starts the server; on early exit returns its exit code and stderr.
pub fn try_start_server(datadir: &Path, rundir: &Path, extra: &[&str]) -> Result<Server, (Option<i32>, String)> {
    try_start_server_with_env(datadir, rundir, extra, &[])
}

/// Starts the server with extra environment variables; on early exit returns its exit code and
/// stderr.
pub fn try_start_server_with_env(
    datadir: &Path,
    rundir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Server, (Option<i32>, String)> {
    // Tests that check the hand-out order run without audit picks (random by design); the tests
    // of the audit picks set the rate themselves.
    let audit_off: &[&str] = if extra.contains(&"--audit-rate") { &[] } else { &["--audit-rate", "0"] };
    let mut child = Command::new(env!("CARGO_BIN_EXE_binann-server"))
        .args(["--datadir", datadir.to_str().unwrap(), "--rundir", rundir.to_str().unwrap(), "--port", "0"])
        .args(audit_off)
        .args(extra)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = stderr.clone();
    let err_pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    match lines.next() {
        Some(Ok(line)) if line.contains("listening on http://") => {
            let base = line.split("listening on ").nth(1).unwrap().trim().replace("//0.0.0.0:", "//127.0.0.1:");
            let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let sink = stdout.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
            Ok(Server { child, base, datadir: datadir.to_owned(), rundir: rundir.to_owned(), stderr, stdout })
        }
        _ => {
            let status = child.wait().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let err = stderr.lock().unwrap().clone();
            Err((status.code(), err))
        }
    }
}

impl Server {
    /// A client identified by the X-Client header.
    pub fn client(&self, name: &str) -> Client {
        Client {
            base: self.base.clone(),
            name: name.to_owned(),
            agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).redirects(0).build(),
            headers: Vec::new(),
        }
    }
    /// The token in the `?token=` URL the server printed (waits up to 5 s for the line).
    pub fn printed_token(&self) -> Option<String> {
        for _ in 0..100 {
            let out = self.stdout.lock().unwrap().clone();
            if let Some(token) = out.split("?token=").nth(1) {
                return Some(token.split_whitespace().next().unwrap().to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
    /// `kill -9`.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
    /// Graceful stop.
    pub fn stop(mut self) {
        unsafe_free_sigterm(self.child.id());
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// An HTTP client of the API.
pub struct Client {
    pub base: String,
    pub name: String,
    pub agent: ureq::Agent,
    /// Sent with every request.
    pub headers: Vec<(String, String)>,
}

/// Status and JSON body of a response (errors included).
pub type Reply = (u16, Value);

fn reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
    match r {
        Ok(resp) => {
            let status = resp.status();
            (status, resp.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("transport error: {e}"),
    }
}

impl Client {
    /// The same client, also sending `name: value` with every request.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    /// A request with this client's headers.
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut r = self.agent.request(method, &format!("{}{path}", self.base)).set("X-Client", &self.name);
        for (name, value) in &self.headers {
            r = r.set(name, value);
        }
        r
    }
    pub fn get(&self, path: &str) -> Reply {
        reply(self.request("GET", path).call())
    }
    pub fn post_json(&self, path: &str, body: &str) -> Reply {
        reply(self.request("POST", path).set("Content-Type", "application/json").send_string(body))
    }
    /// Any request; `headers` come after the client's own (and replace them).
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut r = self.request(method, path);
        for (name, value) in headers {
            r = r.set(name, value);
        }
        reply(if body.is_empty() { r.call() } else { r.send_string(body) })
    }
    pub fn next(&self, count: usize) -> Vec<u64> {
        let (status, body) = self.get(&format!("/api/next?count={count}"));
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect()
    }
    pub fn annotate(&self, id: u64, label: &str) -> Reply {
        self.post_json("/api/annotations", &format!(r#"{{"id": {id}, "label": "{label}"}}"#))
    }
    pub fn undo(&self) -> Reply {
        self.post_json("/api/undo", "")
    }
    pub fn stats(&self) -> Value {
        let (status, body) = self.get("/api/stats");
        assert_eq!(status, 200);
        body
    }
}

/// The error code of an error reply.
pub fn code(r: &Reply) -> &str {
    r.1["error"]["code"].as_str().unwrap_or("")
}
