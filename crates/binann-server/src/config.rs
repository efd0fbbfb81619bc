//! The server's options. Each is a flag with an environment variable; `config/binann.env` lists
//! them all with their defaults.

use std::path::PathBuf;

/// binann's annotation server: the page and its JSON API.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "binann-server", version)]
pub struct ServerConfig {
    /// Folder of images to label (searched recursively).
    #[arg(long, env = "BINANN_DATADIR")]
    pub datadir: PathBuf,
    /// Run directory shared by all binann processes (created if missing).
    #[arg(long, env = "BINANN_RUNDIR")]
    pub rundir: PathBuf,
    /// Address to listen on. Beyond loopback (e.g. 0.0.0.0) every API and image request needs the
    /// access token (see --token).
    #[arg(long, env = "BINANN_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, env = "BINANN_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Rescan DATADIR at start-up for new images (false: trust the manifest; faster at 1M images).
    #[arg(long, env = "BINANN_RESCAN", default_value_t = true, action = clap::ArgAction::Set)]
    pub rescan: bool,
    /// Seconds after which a quiet client's images are handed to others.
    #[arg(long, env = "BINANN_HANDOUT_TIMEOUT_SECS", default_value_t = 120)]
    pub handout_timeout_secs: u64,
    /// Share of the images handed out that are audit picks: drawn uniformly at random from the
    /// unlabelled images (the page does not say which), to estimate how many positives are left
    /// (0 to 0.5; 0: no estimate).
    #[arg(long, env = "BINANN_AUDIT_RATE", default_value_t = 0.05, value_parser = audit_rate)]
    pub audit_rate: f64,
    /// After a positive that none of its nearest images labelled positive resemble (a new kind of
    /// positive), show this many of its nearest unlabelled images next, to the person who labelled
    /// it, before the model has learnt from it (0: never). The model may not generalise from one
    /// example of a kind; a few of its look-alikes labelled teach it the kind.
    #[arg(long, env = "BINANN_LOOKALIKES", default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=32))]
    pub lookalikes: u64,
    /// Folder of example images of the positive class that are not in the dataset (searched
    /// recursively; copied into RUNDIR/seeds at start-up). The model learns from them beside the
    /// labels, so it can rank before the first positive is found. More can be dropped on the page.
    #[arg(long, env = "BINANN_SEED_IMAGES")]
    pub seed_images: Option<PathBuf>,
    /// Watch the run directory by polling only (for network disks shared between machines).
    #[arg(long, env = "BINANN_FORCE_POLLING", default_value_t = false, action = clap::ArgAction::Set)]
    pub force_polling: bool,
    /// Polling interval in milliseconds, at least 10 (also the fallback when file events are unavailable).
    #[arg(long, env = "BINANN_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(binann_core::cli::MIN_POLL_MS..))]
    pub poll_ms: u64,
    /// HTTP worker threads.
    #[arg(long, env = "BINANN_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Access token required on every API and image request (at least 16 letters, digits, '-',
    /// '_', '.' or '~'). Unset: none on a loopback address; beyond it one is generated and printed
    /// as the URL to open. Set empty: none, which beyond loopback is refused unless --no-auth.
    #[arg(long, env = "BINANN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve beyond loopback without a token: anyone who can reach the server can label and see
    /// every image (only behind something that lets in only the right people).
    #[arg(long, env = "BINANN_NO_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub no_auth: bool,
    /// Host names, besides IP addresses and localhost, that requests may be addressed to when no
    /// token is required (comma-separated, e.g. labelbox,labelbox.lan). Without a token, a request
    /// addressed to any other name is refused: a web page whose owner points its name at this
    /// machine (DNS rebinding) would otherwise be served as this server's own page. On a loopback
    /// address only loopback names and these are answered. With a token every name is answered.
    #[arg(long, env = "BINANN_ALLOWED_HOSTS", value_delimiter = ',', value_parser = allowed_host)]
    pub allowed_hosts: Vec<String>,
    /// Serve the page from this folder instead of the copy built into the binary (for page
    /// development: edit and reload without rebuilding).
    #[arg(long, env = "BINANN_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
}

/// A name for --allowed-hosts, as a browser sends it in `Host`: no scheme, port or path. An empty
/// one (`BINANN_ALLOWED_HOSTS=`, a trailing comma) names nothing and is left out by the access
/// decision.
fn allowed_host(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not a host name: give names such as labelbox or labels.example.org, without scheme or port (IP addresses need no listing)"
        ))
    }
}

fn audit_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=0.5).contains(&rate) { Ok(rate) } else { Err(format!("the audit rate must be between 0 and 0.5, got {rate}")) }
}
