//! The JSON API's handlers.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use binann_core::annotations::{Event, Label, Record};
use binann_core::api::{
    Acknowledged, AnnotatorStats, History, HistoryEntry, Image, ModelStats, OnlineAccuracy, SeedAnswer, SeedBody, Similar, Stats, Undone,
};
use serde::Deserialize;
use serde_json::json;

use crate::app_state::{AppState, durable};
use crate::error::ApiError;

/// Name of the cookie that identifies a browser tab's client.
pub const CLIENT_COOKIE: &str = "binann_client";
/// Header a script may send instead of the cookie.
pub const CLIENT_HEADER: &str = "X-Client";
/// Header naming the person who gives a label: percent-encoded UTF-8 (a header value cannot carry
/// most of Unicode), as the page's encodeURIComponent writes it; plain ASCII names need no encoding.
pub const ANNOTATOR_HEADER: &str = "X-Annotator";
/// Most characters of an annotator's name.
pub const MAX_ANNOTATOR_CHARS: usize = 64;
/// Widest or tallest image served, in pixels: the side the trainer and the inferrer decode.
pub const MAX_IMAGE_SIDE: u32 = binann_core::image_limits::ImageLimits::DATASET.max_side;
/// Most images one `/api/next` call hands out.
pub const MAX_COUNT: u32 = 32;

/// Who is asking, and the cookie to set when the client is new.
struct Client {
    id: String,
    new_cookie: Option<Cookie<'static>>,
}

fn valid_client_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn client_of(req: &HttpRequest) -> Result<Client, ApiError> {
    if let Some(h) = req.headers().get(CLIENT_HEADER) {
        let id = h
            .to_str()
            .ok()
            .filter(|s| valid_client_id(s))
            .ok_or_else(|| ApiError::BadRequest(format!("{CLIENT_HEADER} must be 1-64 letters, digits, '-' or '_'")))?;
        return Ok(Client { id: id.to_owned(), new_cookie: None });
    }
    if let Some(c) = req.cookie(CLIENT_COOKIE).filter(|c| valid_client_id(c.value())) {
        return Ok(Client { id: c.value().to_owned(), new_cookie: None });
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let cookie = Cookie::build(CLIENT_COOKIE, id.clone()).path("/").http_only(true).same_site(SameSite::Strict).finish();
    Ok(Client { id, new_cookie: Some(cookie) })
}

/// The annotator's name from [`ANNOTATOR_HEADER`], trimmed; empty when none was given.
fn annotator_of(req: &HttpRequest) -> Result<String, ApiError> {
    let Some(value) = req.headers().get(ANNOTATOR_HEADER) else { return Ok(String::new()) };
    let shown = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let name = percent_decode(value.as_bytes())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::InvalidAnnotator(format!("{shown:?} is not percent-encoded UTF-8")))?;
    let name = name.trim();
    if name.chars().count() > MAX_ANNOTATOR_CHARS {
        return Err(ApiError::InvalidAnnotator(format!("is longer than {MAX_ANNOTATOR_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::InvalidAnnotator(format!("{shown:?} holds control characters")));
    }
    Ok(name.to_owned())
}

/// Decodes `%XX` escapes; `None` when an escape is cut short or not hexadecimal.
fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            out.push(b);
            rest = tail;
        }
    }
    Some(out)
}

fn respond(client: Client, body: impl serde::Serialize) -> HttpResponse {
    let mut r = HttpResponse::Ok();
    if let Some(c) = client.new_cookie {
        r.cookie(c);
    }
    r.insert_header(("Cache-Control", "no-store")).json(body)
}

/// Query of `/api/next`.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    /// How many images (1..=32).
    count: Option<i64>,
    /// Comma-separated ids this client is showing: they stay reserved for it.
    keep: Option<String>,
}

/// Most ids in `keep`.
pub const MAX_KEEP: usize = 64;

fn parse_keep(keep: Option<&str>) -> Result<Vec<u32>, ApiError> {
    let Some(keep) = keep.filter(|k| !k.is_empty()) else { return Ok(Vec::new()) };
    let ids: Vec<u32> =
        keep.split(',').map(|s| s.trim().parse::<u32>().map_err(|_| ApiError::InvalidId(s.to_owned()))).collect::<Result<_, _>>()?;
    if ids.len() > MAX_KEEP {
        return Err(ApiError::BadRequest(format!("keep lists {} ids; at most {MAX_KEEP}", ids.len())));
    }
    Ok(ids)
}

/// `GET /api/next?count=K&keep=ID,ID`.
pub async fn next(req: HttpRequest, state: web::Data<AppState>, q: web::Query<NextQuery>) -> Result<HttpResponse, ApiError> {
    let count = q.count.unwrap_or(1);
    if !(1..=MAX_COUNT as i64).contains(&count) {
        return Err(ApiError::InvalidCount { max: MAX_COUNT, got: count });
    }
    let keep = parse_keep(q.keep.as_deref())?;
    let client = client_of(&req)?;
    let body = {
        let mut inner = state.lock();
        let inner = &mut *inner;
        let ids = inner.handouts.next(&client.id, count as usize, &inner.annotations, &keep);
        ids.iter().map(|&id| Image::new(id, inner.manifest.path(id).unwrap_or_default(), inner.handouts.prob(id))).collect::<Vec<_>>()
    };
    Ok(respond(client, body))
}

/// Body of `POST /api/annotations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotateBody {
    /// The image.
    id: serde_json::Value,
    /// "positive", "negative" or "skip".
    label: String,
}

fn parse_id(v: &serde_json::Value) -> Result<u64, ApiError> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| ApiError::InvalidId(n.to_string())),
        other => Err(ApiError::InvalidId(other.to_string())),
    }
}

/// A JSON body of at most `max` bytes. The route reads a little more than `max` (see
/// `READ_LIMIT_BYTES`) before the body is judged, so a body just over the limit gets its 413
/// answer instead of a connection closed under the client's feet.
fn json_body<T: serde::de::DeserializeOwned>(body: Result<web::Bytes, actix_web::Error>, max: usize) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.as_response_error().status_code() == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("reading the body: {e}"))
        }
    })?;
    if body.len() > max {
        return Err(ApiError::PayloadTooLarge);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

/// `POST /api/annotations`: answers only once the annotation is durable.
pub async fn annotate(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body: AnnotateBody = json_body(body, crate::MAX_BODY_BYTES)?;
    let client = client_of(&req)?;
    let annotator = annotator_of(&req)?;
    let label = Label::parse(&body.label).ok_or_else(|| ApiError::InvalidLabel(body.label.clone()))?;
    let id = parse_id(&body.id)?;
    if id >= state.lock().manifest.len() as u64 {
        return Err(ApiError::UnknownImage(id));
    }
    let id = id as u32;
    // A retry of this client's latest label (its answer was lost, or it is still on its way) must
    // not record it twice, or one undo would remove only the copy. Nor may it be acknowledged
    // before the original is on disk: wait for everything queued so far, then check that the
    // original is still in force (a failed write rebuilds the state without it).
    let is_retry = |inner: &crate::app_state::Inner| {
        inner
            .annotations
            .undo_target(&client.id)
            .filter(|(top_id, top_seq)| *top_id == id && inner.annotations.get(id).is_some_and(|e| e.seq == *top_seq && e.label == label))
            .map(|(_, top_seq)| top_seq)
    };
    // One critical section decides between a retry and a new record, so two copies of one request
    // racing each other still record it once.
    let (seq, rx, retry) = {
        let mut inner = state.lock();
        inner.ready_to_write()?;
        match is_retry(&inner) {
            Some(seq) => (seq, inner.barrier()?, Some(inner.failed_batches)),
            None => {
                let record = Record {
                    seq: inner.annotations.next_seq(),
                    time_ms: binann_core::now_ms(),
                    client: client.id.clone(),
                    annotator,
                    event: Event::Label { id, label, prob: inner.handouts.prob(id) },
                    audit: inner.handouts.take_audit(id),
                };
                let rx = inner.commit(&record)?;
                inner.handouts.labelled(id);
                (record.seq, rx, None)
            }
        }
    };
    durable(rx).await?;
    // No batch failed while the retry waited: the original, queued before the barrier, is on disk.
    // Otherwise it is only if it is still in force (the rebuild dropped it if it failed).
    if let Some(failures) = retry {
        let inner = state.lock();
        if inner.failed_batches != failures && inner.annotations.get(id).is_none_or(|e| e.seq != seq) {
            return Err(ApiError::StorageUnavailable("the first copy of this label could not be saved".into()));
        }
    }
    let lookalikes = if label == Label::Positive && retry.is_none() && state.lookalikes > 0 {
        queue_lookalikes(&state, &client.id, id).await
    } else {
        Vec::new()
    };
    Ok(respond(client, Acknowledged { id, label, seq, lookalikes }))
}

/// After positive `id`: when none of its [`KIND_NEIGHBOURHOOD`](crate::app_state::KIND_NEIGHBOURHOOD) nearest images is labelled
/// positive (the first of its kind), puts its `--lookalikes` nearest unlabelled images next for
/// `client` and returns them; otherwise nothing. A model trained on one example of a kind among
/// many negatives may learn that one image and not the kind (in a benchmark run: a lone ankle boot
/// among 60 trousers, and no other ankle boot shown in the 300 labels after it); its look-alikes,
/// labelled, teach it the kind. An image the sketches do not hold yet (embedded after the
/// selector last wrote them) waits for the next sketches; see [`lookalikes_when_sketched`].
async fn queue_lookalikes(state: &AppState, client: &str, id: u32) -> Vec<u32> {
    let sketches = state.lock().sketches.clone();
    let Some(sketches) = sketches else {
        state.lock().wait_for_sketch(client, id);
        return Vec::new();
    };
    match web::block(move || sketches.nearest(id, SIMILAR_CANDIDATES, |_| false)).await {
        Ok(Some(candidates)) => state.lock().put_lookalikes_first(client, &candidates, state.lookalikes),
        Ok(None) => {
            state.lock().wait_for_sketch(client, id);
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// Called with each new set of sketches: the positives that waited for theirs get their
/// look-alikes now (if they are still positive and still the first of their kind), put next for
/// the client that labelled them.
pub fn lookalikes_when_sketched(state: &AppState, sketches: &binann_core::sketches::Sketches) {
    let waiting = std::mem::take(&mut state.lock().waiting_for_sketch);
    let mut still = Vec::new();
    for (client, id) in waiting {
        match sketches.nearest(id, SIMILAR_CANDIDATES, |_| false) {
            Some(candidates) => {
                let mut inner = state.lock();
                if inner.annotations.get(id).is_some_and(|e| e.label == Label::Positive) {
                    let queued = inner.put_lookalikes_first(&client, &candidates, state.lookalikes);
                    if !queued.is_empty() {
                        tracing::info!(id, queued = queued.len(), "look-alikes of a new kind of positive put next, once embedded");
                    }
                }
            }
            None => still.push((client, id)),
        }
    }
    state.lock().waiting_for_sketch.extend(still);
}

/// `POST /api/seeds` `{"data": BASE64}`: adds an example image of the positive class from outside
/// the dataset (a file dropped on the page). It is checked to be a readable image and kept in the
/// run directory under a name made from its bytes, so nothing the client sends names a file.
///
/// Cheapest first: the same bytes given before are known by their hash; an image too large for a
/// seed is refused from its header; only then is it decoded, at most
/// [`crate::seeds::MAX_CONCURRENT_DECODES`] at once.
pub async fn add_seed(state: web::Data<AppState>, body: Result<web::Bytes, actix_web::Error>) -> Result<HttpResponse, ApiError> {
    use base64::Engine;
    let body: SeedBody = json_body(body, crate::seeds::MAX_BODY_BYTES)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.data.as_bytes())
        .map_err(|e| ApiError::BadRequest(format!("data is not base64: {e}")))?;
    if bytes.len() > binann_core::seeds::MAX_SEED_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let refused = |e: crate::seeds::Refused| match e {
        crate::seeds::Refused::NotAnImage(why) => ApiError::NotAnImage(why),
        crate::seeds::Refused::TooLarge(e) => ApiError::SeedTooLarge(e.to_string()),
    };
    let seeds_dir = state.seeds_dir.clone();
    // Hashing and reading the header: milliseconds, but off the async workers all the same.
    let (bytes, extension) = web::block(move || -> Result<_, ApiError> {
        if binann_core::seeds::find(&seeds_dir, &bytes).is_some() {
            return Ok((bytes, None));
        }
        let extension = crate::seeds::check_header(&bytes).map_err(refused)?;
        Ok((bytes, Some(extension)))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let added = match extension {
        None => false,
        Some(extension) => {
            let _decoding = crate::seeds::decode_permit().await;
            let seeds_dir = state.seeds_dir.clone();
            // Decoding a large photo takes a while: off the async workers.
            web::block(move || -> Result<bool, ApiError> {
                crate::seeds::check_decodes(&bytes).map_err(refused)?;
                match binann_core::seeds::add(&seeds_dir, &bytes, extension) {
                    Ok((_, added)) => Ok(added),
                    Err(binann_core::seeds::SeedError::TooLarge { .. }) => Err(ApiError::PayloadTooLarge),
                    Err(e @ binann_core::seeds::SeedError::TooMany) => Err(ApiError::TooManySeeds(e.to_string())),
                    Err(e @ binann_core::seeds::SeedError::FolderFull { .. }) => Err(ApiError::SeedFolderFull(e.to_string())),
                    Err(e) => Err(ApiError::StorageUnavailable(e.to_string())),
                }
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
        }
    };
    let seed_images = binann_core::seeds::list(&state.seeds_dir).len() as u64;
    state.lock().seed_images = seed_images;
    if added {
        tracing::info!(seed_images, "a seed image was added");
    }
    Ok(HttpResponse::Ok().json(SeedAnswer { added, seed_images }))
}

/// Body of `POST /api/similar`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarBody {
    /// The image to find more like.
    id: serde_json::Value,
    /// How many (1..=32; default 8).
    count: Option<i64>,
}

/// Neighbours looked at before leaving out the labelled and held ones.
const SIMILAR_CANDIDATES: usize = 512;

/// `POST /api/similar` `{"id": N, "count": K}`: "more like this". Puts the K unlabelled images
/// nearest to image N (in the backbone's embedding space, through the selector's sketches) next in
/// this client's queue, nearest first, and lists them. Other clients are not affected.
pub async fn similar(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Result<web::Json<SimilarBody>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    let count = body.count.unwrap_or(8);
    if !(1..=MAX_COUNT as i64).contains(&count) {
        return Err(ApiError::InvalidCount { max: MAX_COUNT, got: count });
    }
    let client = client_of(&req)?;
    let id = parse_id(&body.id)?;
    let (sketches, total) = {
        let inner = state.lock();
        (inner.sketches.clone(), inner.manifest.len() as u64)
    };
    if id >= total {
        return Err(ApiError::UnknownImage(id));
    }
    let id = id as u32;
    let sketches = sketches.ok_or(ApiError::NotEmbedded(id))?;
    // The search runs outside the lock (tens of milliseconds at 1,000,000 images); what is
    // labelled or held is left out under it.
    let candidates = web::block(move || sketches.nearest(id, SIMILAR_CANDIDATES, |_| false))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or(ApiError::NotEmbedded(id))?;
    let queued = state.lock().put_nearest_first(&client.id, &candidates, count as usize);
    Ok(respond(client, Similar { id, queued }))
}

/// `POST /api/undo`: removes this client's last annotation and returns its image.
pub async fn undo(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let client = client_of(&req)?;
    let annotator = annotator_of(&req)?;
    let (body, rx) = {
        let mut inner = state.lock();
        inner.ready_to_write()?;
        let (id, of_seq) = inner.annotations.undo_target(&client.id).ok_or(ApiError::NothingToUndo)?;
        let undone = inner.annotations.get(id).filter(|e| e.seq == of_seq);
        let record = Record {
            audit: None,
            seq: inner.annotations.next_seq(),
            time_ms: binann_core::now_ms(),
            client: client.id.clone(),
            annotator,
            event: Event::Undo { id, of_seq },
        };
        let rx = inner.commit(&record)?;
        if let Some(pick) = inner.annotations.audit_pick(of_seq) {
            inner.handouts.restore_audit(id, pick);
        }
        inner.handouts.reopened(id);
        inner.handouts.hold(&client.id, id);
        let body = Undone {
            image: Image::new(id, inner.manifest.path(id).unwrap_or_default(), inner.handouts.prob(id)),
            label: undone.map(|e| e.label),
        };
        (body, rx)
    };
    durable(rx).await?;
    Ok(respond(client, body))
}

/// `GET /api/stats`.
pub async fn stats(state: web::Data<AppState>) -> HttpResponse {
    let inner = state.lock();
    let counts = inner.annotations.counts();
    let total = inner.manifest.len() as u64;
    let now = binann_core::now_ms();
    let (evaluated, correct) = inner.annotations.online_accuracy(None);
    let mut annotators: Vec<_> = inner.annotations.annotator_counts().collect();
    annotators.sort_by(|(a, ca), (b, cb)| (cb.annotated() + cb.skipped).cmp(&(ca.annotated() + ca.skipped)).then(a.cmp(b)));
    let annotators = annotators
        .into_iter()
        .map(|(name, c)| AnnotatorStats {
            name: name.to_owned(),
            annotated: c.annotated(),
            positives: c.positives,
            negatives: c.negatives,
            skipped: c.skipped,
        })
        .collect();
    let model = inner.handouts.source.as_ref().and_then(|r| {
        r.model.as_ref().map(|m| ModelStats {
            checkpoint_generation: m.checkpoint_generation,
            age_s: now.saturating_sub(m.checkpoint_ms) as f64 / 1000.0,
            trained_on: m.labels_used,
            positives_trained_on: m.positives_used,
            mode: m.mode.clone(),
            backbone: m.backbone.clone(),
            input_size: m.input_size,
            loss: m.loss,
            predicted: r.predicted,
            predicted_share: if total > 0 { r.predicted as f64 / total as f64 } else { 0.0 },
            seen: inner.coverage.seen(),
            seen_eta_s: inner.coverage.eta_s(total),
            selector: r.selector.clone(),
            ranking_age_s: now.saturating_sub(r.created_ms) as f64 / 1000.0,
            estimated_positive_rate: inner.handouts.mean_prob,
        })
    });
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(Stats {
        total,
        annotated: counts.annotated(),
        positives: counts.positives,
        negatives: counts.negatives,
        skipped: counts.skipped,
        remaining: total.saturating_sub(counts.annotated() + counts.skipped),
        last_minute: inner.annotations.labels_since(now.saturating_sub(60_000)),
        annotators,
        online: (evaluated > 0).then(|| OnlineAccuracy { evaluated, correct, accuracy: correct as f64 / evaluated as f64 }),
        model,
        selector: inner.handouts.source.as_ref().map(|r| r.selector.clone()),
        positives_left: inner.annotations.positives_left(total),
        seed_images: inner.seed_images,
        journal_problems: inner.journal_problems.clone(),
    })
}

/// Query of `/api/history`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// Skip the first `since` entries (the page asks only for what it has not seen).
    since: Option<usize>,
}

/// `GET /api/history?since=N`: positive/negative labels in force, oldest first, with the model's
/// probability before each (for the page's charts).
pub async fn history(state: web::Data<AppState>, q: web::Query<HistoryQuery>) -> HttpResponse {
    let inner = state.lock();
    let all = inner.annotations.history();
    let since = q.since.unwrap_or(0).min(all.len());
    let labels =
        all[since..].iter().map(|(id, e)| HistoryEntry { id: *id, seq: e.seq, label: e.label, prob: e.prob, time_ms: e.time_ms }).collect();
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(History { total: all.len(), since, labels })
}

/// `GET /api/images/{id}`: the bytes of an image in the manifest, and nothing else. The request
/// only ever selects an entry of the manifest; no part of it becomes a path.
pub async fn image(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let raw = id.into_inner();
    let id: u32 = raw.parse().map_err(|_| ApiError::InvalidId(raw.clone()))?;
    let rel = {
        let inner = state.lock();
        inner.manifest.path(id).map(str::to_owned).ok_or(ApiError::UnknownImage(id as u64))?
    };
    let file = state.datadir.join(&rel);
    let rel2 = rel.clone();
    let (bytes, mime) = web::block(move || read_image(id, &file, &rel2)).await.map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().content_type(mime).insert_header(("Cache-Control", "private, max-age=3600")).body(bytes))
}

fn read_image(id: u32, file: &std::path::Path, rel: &str) -> Result<(Vec<u8>, &'static str), ApiError> {
    // A symlink swapped in after the scan must not lead outside the dataset.
    let meta = std::fs::symlink_metadata(file).map_err(|_| ApiError::ImageMissing { id, path: rel.to_owned() })?;
    if !meta.is_file() {
        return Err(ApiError::ImageMissing { id, path: rel.to_owned() });
    }
    let bytes = std::fs::read(file).map_err(|_| ApiError::ImageMissing { id, path: rel.to_owned() })?;
    let unreadable = |reason: String| ApiError::ImageUnreadable { id, path: rel.to_owned(), reason };
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format().map_err(|e| unreadable(e.to_string()))?;
    let format = reader.format().ok_or_else(|| unreadable("unknown image format".into()))?;
    let (w, h) = reader.into_dimensions().map_err(|e| unreadable(e.to_string()))?;
    // A decompression bomb (say 50,000 x 50,000 pixels in a small file) would take the browser
    // down: refuse what no screen needs.
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(unreadable(format!("{w}x{h} pixels is larger than the {MAX_IMAGE_SIDE}-pixel limit")));
    }
    Ok((bytes, format.to_mime_type()))
}

/// `GET /health`.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let images = state.lock().manifest.len();
    HttpResponse::Ok().json(json!({ "status": "ok", "images": images }))
}

/// Any unknown route.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("{} {}", req.method(), req.path())))
}

/// A known route asked with the wrong method.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotator(value: &[u8]) -> Result<String, ApiError> {
        let req = actix_web::test::TestRequest::default()
            .insert_header((ANNOTATOR_HEADER, actix_web::http::header::HeaderValue::from_bytes(value).unwrap()))
            .to_http_request();
        annotator_of(&req)
    }

    #[test]
    fn annotator_names_are_percent_decoded_trimmed_and_bounded() {
        assert_eq!(annotator_of(&actix_web::test::TestRequest::default().to_http_request()).unwrap(), "");
        assert_eq!(annotator(b"alice").unwrap(), "alice");
        assert_eq!(annotator(b"  Ana%20Mar%C3%ADa ").unwrap(), "Ana María");
        assert_eq!(annotator(b"%E6%97%A5%E6%9C%AC").unwrap(), "日本");
        assert_eq!(annotator(b"").unwrap(), "");
        assert_eq!(annotator("x".repeat(64).as_bytes()).unwrap().len(), 64);
        for bad in [&b"x%"[..], b"%zz", b"%C3", b"a%0Ab", b"%E6%97"] {
            assert!(matches!(annotator(bad), Err(ApiError::InvalidAnnotator(_))), "{}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(annotator("é".repeat(65).as_bytes()), Err(ApiError::InvalidAnnotator(_))));
    }
}
