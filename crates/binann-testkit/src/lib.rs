//! binann-testkit: child processes for binann's tests and benchmarks, kept out of the libraries
//! the long-running processes link.
//!
//! - [`ChildGroup`]: children killed and reaped when the group is dropped.
//! - [`server_url`]: the address a freshly started `binann-server` prints.

use std::io::{BufRead, BufReader};
use std::process::Child;

/// Child processes killed (SIGKILL) and reaped when the group is dropped, so a failing benchmark
/// or test never leaves processes behind.
#[derive(Debug, Default)]
pub struct ChildGroup(pub Vec<Child>);

impl ChildGroup {
    /// Adds a child.
    pub fn push(&mut self, child: Child) {
        self.0.push(child);
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads the `binann-server listening on http://ADDR` line a server started with a piped stdout
/// prints once it listens; returns the URL. The rest of its stdout is drained in the background.
pub fn server_url(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("the server's stdout is not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().transpose().map_err(|e| e.to_string())?.unwrap_or_default();
    let url = line.split("listening on ").nth(1).map(|s| s.trim().to_owned());
    std::thread::spawn(move || lines.for_each(drop));
    url.ok_or_else(|| format!("the server did not start (it printed {line:?})"))
}
