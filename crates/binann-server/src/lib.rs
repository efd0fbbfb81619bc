//! binann-server: the annotation page and its JSON API. It reads the manifest and the ranking,
//! writes the annotation journal, and never links libtorch.
//!
//! - [`config`]: command-line options (each also an environment variable).
//! - [`access`]: who may use the API: the access token beyond loopback, the refusal of
//!   cross-site requests.
//! - [`api`]: the request handlers.
//! - [`coverage`]: how much of the folder the AI has seen, and how long the rest will take.
//! - [`error`]: every API error, with its HTTP status and stable code in one table.
//! - [`handout`]: which image each client gets next, and which images each client holds.
//! - [`seeds`]: example images of the positive class from outside the dataset: checked, then kept
//!   in the run directory.
//! - [`app_state`]: the shared state and the journal writer thread (group commit).
//! - [`web_assets`]: the page, compiled into the binary.

pub mod access;
pub mod api;
pub mod app_state;
pub mod config;
pub mod coverage;
pub mod error;
pub mod handout;
pub mod seeds;
pub mod web_assets;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use binann_core::RunDirFile;
use binann_core::annotations::{AnnotationState, JournalMark, Record};
use binann_core::codec::FileKind;
use binann_core::journal::{JournalWriter, Opened};
use binann_core::manifest::Manifest;
use binann_core::ranking::Ranking;
use binann_core::rundir::RunDir;
use binann_core::watch::{FileWatcher, WatchOptions};

pub use access::Access;
use app_state::AppState;
pub use config::ServerConfig;
use error::ApiError;
use handout::{Handouts, ServedOrder};

/// Largest request body accepted (annotations are tiny).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Bodies up to this size are read before being refused, so the client gets a clean 413.
pub const READ_LIMIT_BYTES: usize = 1024 * 1024;

/// A server ready to run: its state, and the lock that makes it the run directory's only server.
pub struct Prepared {
    /// Shared state.
    pub state: AppState,
    _lock: std::fs::File,
    rundir: RunDir,
    config: ServerConfig,
}

/// Opens the run directory, scans the dataset, replays the journal and loads the ranking.
pub fn prepare(config: ServerConfig) -> anyhow::Result<Prepared> {
    let started = std::time::Instant::now();
    let rundir = RunDir::create_or_open(&config.rundir)?;
    let lock = rundir.lock("server")?;
    let manifest = load_or_scan_manifest(&rundir, &config)?;
    let opened = JournalWriter::open::<Record>(&rundir.annotations(), FileKind::Annotations)
        .context("opening the annotation journal (nothing was changed)")?;
    let annotations = AnnotationState::replay(&opened.records)
        .with_context(|| format!("replaying {} (nothing was changed)", rundir.annotations().display()))?;
    let (journal_problems, mark_floor) = check_journal(&rundir, &opened, &annotations);
    for problem in &journal_problems {
        tracing::error!("{problem}");
    }
    // The audit picks' seed differs per start: they need to be uniform, not repeatable.
    let mut handouts =
        Handouts::with_audits(manifest.len(), Duration::from_secs(config.handout_timeout_secs), config.audit_rate, binann_core::now_ms());
    match Ranking::load(&rundir.ranking()) {
        Ok((generation, ranking)) => handouts.set_ranking(manifest.len(), generation, ranking),
        Err(e) if e.is_not_found() => tracing::info!("no ranking yet: serving the default order"),
        Err(e) => tracing::error!("ignoring an unreadable ranking, serving the default order until a good one appears: {e}"),
    }
    let counts = annotations.counts();
    tracing::info!(
        images = manifest.len(),
        annotated = counts.annotated(),
        skipped = counts.skipped,
        "ready in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    if let Some(folder) = &config.seed_images {
        let imported = seeds::import_folder(folder, &rundir.seeds_dir())?;
        tracing::info!(
            new = imported.added,
            given_before = imported.known,
            not_images = imported.unreadable.len(),
            "seed images from {}",
            folder.display()
        );
        for (path, why) in &imported.unreadable {
            tracing::warn!("leaving out {}: {why}", path.display());
        }
    }
    let datadir = config.datadir.clone();
    let journal =
        app_state::Journal { sink: Box::new(opened.writer), path: rundir.annotations(), mark: Some((rundir.journal_mark(), mark_floor)) };
    let mut state = AppState::new(manifest, datadir, journal, annotations, handouts, rundir.seeds_dir());
    state.lookalikes = config.lookalikes as usize;
    state.lock().journal_problems = journal_problems;
    Ok(Prepared { state, _lock: lock, rundir, config })
}

/// What is wrong with the labels the journal holds, in words for the person, and the journal's
/// high-water mark to keep (see [`JournalMark`]). A torn tail alone is no problem: it is the
/// record a crash interrupted, never acknowledged. Records lost inside the journal, or a journal
/// holding fewer records than its mark says it once did (cut short, or an older copy put back),
/// are acknowledged labels gone: said loudly, never absorbed. A mark that cannot be read is
/// replaced, and said in the log.
fn check_journal(rundir: &RunDir, opened: &Opened<Record>, annotations: &AnnotationState) -> (Vec<String>, u64) {
    let mut problems = Vec::new();
    let backup = opened.backup.as_ref().map_or_else(String::new, |b| format!(" The file as it was is kept at {}.", b.display()));
    if let Some(backup) = &opened.backup
        && opened.damaged.is_empty()
        && opened.damaged_tail > 0
    {
        tracing::warn!("the journal's torn tail was cut off; the full damaged file is kept at {}", backup.display());
    }
    if !opened.damaged.is_empty() {
        let bytes: u64 = opened.damaged.iter().map(|d| d.len).sum();
        let at: Vec<String> = opened.damaged.iter().take(5).map(|d| d.offset.to_string()).collect();
        problems.push(format!(
            "The annotation journal was damaged: {bytes} bytes in {} stretch(es) (from byte {}) held no intact record and were \
             removed; the {} intact records before and after them are kept.{backup}",
            opened.damaged.len(),
            at.join(", "),
            opened.records.len(),
        ));
    }
    if annotations.lost_records() > 0 {
        problems.push(format!(
            "{} record(s) (labels or undos) are missing from the annotation journal's sequence: lost to damage in the file.",
            annotations.lost_records()
        ));
    }
    let next_seq = annotations.next_seq();
    let mark_path = rundir.journal_mark();
    let floor = match JournalMark::load(&mark_path) {
        Ok((_, mark)) => {
            if let Some(lost) = mark.lost_since(next_seq) {
                problems.push(format!(
                    "The annotation journal ends at record {next_seq}, but this run directory's journal once reached record {} (by {}): {lost} \
                     records (labels or undos) are missing. It was cut short or replaced by an older copy; restore it from a backup \
                     (annotations.* beside it, or yours) with the server stopped. The labels it holds are served meanwhile.",
                    mark.records,
                    mark_path.display(),
                ));
            }
            mark.records.max(next_seq)
        }
        Err(e) if e.is_not_found() => next_seq,
        Err(e) => {
            tracing::warn!("replacing an unreadable journal mark: {e}");
            next_seq
        }
    };
    if let Err(e) = (JournalMark { records: floor, written_ms: binann_core::now_ms() }).save(&mark_path, 1) {
        tracing::warn!("writing the journal's high-water mark: {e}");
    }
    (problems, floor)
}

fn load_or_scan_manifest(rundir: &RunDir, config: &ServerConfig) -> anyhow::Result<Manifest> {
    let previous = match Manifest::load(&rundir.manifest()) {
        Ok((generation, m)) => Some((generation, m)),
        Err(e) if e.is_not_found() => None,
        Err(e) => anyhow::bail!(
            "{e}\nThe manifest maps image ids to files; refusing to guess them. Restore the file, or start a new run directory."
        ),
    };
    if !config.rescan
        && let Some((_, m)) = previous
    {
        return Ok(m);
    }
    let generation = previous.as_ref().map_or(0, |(g, _)| *g);
    let known = previous.as_ref().map_or(0, |(_, m)| m.len());
    let (manifest, added) = Manifest::scan(&config.datadir, previous.map(|(_, m)| m))?;
    if added > 0 || generation == 0 {
        manifest.save(&rundir.manifest(), generation + 1)?;
        tracing::info!("manifest: {known} known images, {added} new");
    }
    Ok(manifest)
}

/// Watches `path` and loads it with `load` whenever it is replaced; each new generation goes to
/// `apply`. A missing file is waited for; a bad one is reported and the last good one kept.
fn spawn_reloader<T: 'static>(
    what: &'static str,
    path: std::path::PathBuf,
    options: WatchOptions,
    load: fn(&std::path::Path) -> Result<(u64, T), binann_core::codec::FileError>,
    apply: impl Fn(u64, T) + Send + 'static,
) {
    std::thread::Builder::new()
        .name(format!("{what}-watcher"))
        .spawn(move || {
            let mut watcher = FileWatcher::new(vec![path.clone()], options);
            let mut last = None;
            loop {
                match load(&path) {
                    Ok((generation, value)) if Some(generation) != last => {
                        last = Some(generation);
                        apply(generation, value);
                    }
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => tracing::error!("keeping the last good {what}: {e}"),
                }
                while watcher.wait(Duration::from_secs(3600)).is_empty() {}
            }
        })
        .unwrap_or_else(|e| panic!("spawning the {what} watcher: {e}"));
}

/// Serves each new ranking the selector writes, and each new set of sketches ("more like this").
fn spawn_watchers(state: AppState, rundir: RunDir, options: WatchOptions) {
    let ranking_state = state.clone();
    spawn_reloader("ranking", rundir.ranking(), options, Ranking::load, move |generation, ranking| {
        // The order is made without the lock, which hand-outs and labels wait for.
        let n = ranking_state.lock().manifest.len();
        let order = ServedOrder::of(n, &ranking);
        let mut inner = ranking_state.lock();
        if generation != inner.handouts.generation {
            let n = inner.manifest.len();
            let done = inner.annotations.counts();
            let seen = ranking.predicted + done.annotated() + done.skipped;
            inner.coverage.record(std::time::Instant::now(), seen.min(n as u64));
            // The folder grew meanwhile (a rescan): made again for every image.
            let order = if order.images() == n { order } else { ServedOrder::of(n, &ranking) };
            inner.handouts.serve(order, generation, ranking);
            tracing::info!(generation, "serving a new ranking");
        }
    });
    spawn_reloader("sketches", rundir.sketches(), options, binann_core::sketches::Sketches::load, move |generation, sketches| {
        let images = sketches.ids.len();
        let sketches = std::sync::Arc::new(sketches);
        state.lock().sketches = Some(sketches.clone());
        tracing::info!(generation, images, "sketches loaded for \"more like this\"");
        api::lookalikes_when_sketched(&state, &sketches);
    });
}

/// Builds the actix application (routes, limits, error handlers).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let query_errors =
        web::QueryConfig::default().error_handler(|err, _req| ApiError::BadRequest(format!("bad query string: {err}")).into());
    let path_errors = web::PathConfig::default().error_handler(|err, _req| ApiError::BadRequest(err.to_string()).into());
    cfg.app_data(query_errors)
        .app_data(path_errors)
        .app_data(web::PayloadConfig::default().limit(READ_LIMIT_BYTES))
        .service(web::resource("/api/next").route(web::get().to(api::next)).default_service(web::to(api::method_not_allowed)))
        .service(web::resource("/api/annotations").route(web::post().to(api::annotate)).default_service(web::to(api::method_not_allowed)))
        .service(web::resource("/api/similar").route(web::post().to(api::similar)).default_service(web::to(api::method_not_allowed)))
        .service(
            web::resource("/api/seeds")
                // As for annotations: read a little beyond the limit, so a body just over it gets
                // its clean 413 rather than a connection cut while it is being sent.
                .app_data(web::PayloadConfig::default().limit(seeds::MAX_BODY_BYTES + READ_LIMIT_BYTES))
                .route(web::post().to(api::add_seed))
                .default_service(web::to(api::method_not_allowed)),
        )
        .service(web::resource("/api/undo").route(web::post().to(api::undo)).default_service(web::to(api::method_not_allowed)))
        .service(web::resource("/api/stats").route(web::get().to(api::stats)).default_service(web::to(api::method_not_allowed)))
        .service(web::resource("/api/history").route(web::get().to(api::history)).default_service(web::to(api::method_not_allowed)))
        .service(web::resource("/api/images/{id}").route(web::get().to(api::image)).default_service(web::to(api::method_not_allowed)))
        .service(web::resource("/health").route(web::get().to(api::health)).default_service(web::to(api::method_not_allowed)))
        .configure(web_assets::configure)
        .default_service(web::to(api::not_found));
}

/// What to print once the server listens: where it listens, and, when a token is required, the
/// URL that opens the page with it (the only place a generated token is ever shown).
pub fn announcement(config: &ServerConfig, local: SocketAddr, access: &Access) -> String {
    let mut text = format!("binann-server listening on http://{local}");
    let unspecified = local.ip().is_unspecified();
    // 0.0.0.0 is not an address to browse to: name the machine, and this machine's own address.
    let host = if unspecified { machine_name().unwrap_or_else(|| "THIS-MACHINE".to_owned()) } else { config.host.clone() };
    if let Some(url) = access.open_url(&host, local.port()) {
        let origin = if access.generated() { "a token generated for this run" } else { "the token given" };
        text.push_str(&format!("\nbinann-server: open {url} to label ({origin}; every API and image request needs it)"));
        if unspecified {
            let local_url = access.open_url(if local.is_ipv4() { "127.0.0.1" } else { "::1" }, local.port()).expect("a token is set");
            text.push_str(&format!("\nbinann-server: or, on this machine, {local_url}"));
        }
    }
    text
}

/// This machine's host name, as other machines on the network may know it.
fn machine_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

/// Serves on `listener` until the returned server is stopped (or the process is signalled);
/// `access` says which token, if any, every API request must carry.
pub fn run(listener: TcpListener, prepared: Prepared, access: Access) -> anyhow::Result<actix_web::dev::Server> {
    let Prepared { state, _lock, rundir, config } = prepared;
    let watch =
        WatchOptions { force_polling: config.force_polling, poll_interval: Duration::from_millis(config.poll_ms), ..Default::default() };
    spawn_watchers(state.clone(), rundir, watch);
    let web_dir = config.web_dir.clone();
    // The lock lives as long as the server: moved into the app factory's shared data.
    let lock = std::sync::Arc::new(_lock);
    let access = web::Data::new(access);
    let server = HttpServer::new(move || {
        let _keep = lock.clone();
        App::new()
            .wrap(actix_web::middleware::from_fn(access::guard))
            .app_data(access.clone())
            .app_data(web::Data::new(state.clone()))
            .app_data(web::Data::new(web_assets::WebDir(web_dir.clone())))
            .app_data(web::Data::new(_keep))
            .configure(configure)
    })
    .workers(config.workers)
    // Open pages keep connections alive; do not let them hold a shutdown up for 30 s.
    .shutdown_timeout(2)
    .listen(listener)?
    .run();
    Ok(server)
}
