//! Every error the API can answer with, and the one table mapping each to an HTTP status and a
//! stable machine-readable code. The body is always `{"error": {"code", "message"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, wrong types, bad query).
    #[error("{0}")]
    BadRequest(String),
    /// An image id that is not a number.
    #[error("image id {0:?} is not a number; ids come from /api/next")]
    InvalidId(String),
    /// An id that is not in the dataset.
    #[error("no image with id {0} in this dataset")]
    UnknownImage(u64),
    /// An `X-Annotator` header that is not a usable name.
    #[error("X-Annotator {0}: send a name of at most 64 characters, percent-encoded UTF-8 (as encodeURIComponent writes it)")]
    InvalidAnnotator(String),
    /// A label other than positive/negative/skip.
    #[error("unknown label {0:?}: use \"positive\", \"negative\" or \"skip\"")]
    InvalidLabel(String),
    /// `count` outside 1..=32.
    #[error("count must be between 1 and {max}, got {got}")]
    InvalidCount {
        /// The largest allowed.
        max: u32,
        /// What was asked.
        got: i64,
    },
    /// "More like this" for an image the AI has not embedded yet (or before any embedding).
    #[error("image {0} has no embedding yet: the AI has not reached it; ask again in a moment")]
    NotEmbedded(u32),
    /// Undo with nothing of this client's to undo.
    #[error("nothing to undo for this client")]
    NothingToUndo,
    /// The image file vanished from the dataset folder.
    #[error("image {id} ({path}) is no longer in the dataset folder")]
    ImageMissing {
        /// The id.
        id: u32,
        /// Its relative path.
        path: String,
    },
    /// The image file cannot be decoded.
    #[error("image {id} ({path}) is not a readable image: {reason}")]
    ImageUnreadable {
        /// The id.
        id: u32,
        /// Its relative path.
        path: String,
        /// What the decoder said.
        reason: String,
    },
    /// A seed image that is not a readable image.
    #[error("not a readable image: {0}")]
    NotAnImage(String),
    /// The run directory already holds the most seed images it keeps.
    #[error("{0}")]
    TooManySeeds(String),
    /// The seed images would take more bytes together than a run directory keeps.
    #[error("{0}")]
    SeedFolderFull(String),
    /// A seed image with more pixels than a seed may have (its header says so; it is not decoded).
    #[error("{0}: a smaller copy serves as well as a seed image")]
    SeedTooLarge(String),
    /// The annotation could not be made durable (disk full, read-only run directory...).
    #[error("the annotation was NOT saved: {0}")]
    StorageUnavailable(String),
    /// The server requires its access token, and the request has none or a wrong one.
    #[error(
        "this server requires its access token: open the address binann-server printed when it started \
         (http://HOST:PORT/?token=...), or send Authorization: Bearer TOKEN"
    )]
    Unauthorized,
    /// A request that would change something, shaped as another site's page can send it.
    #[error("refused, nothing was changed: {0}. binann accepts changes only from its own page or from scripts")]
    CrossSite(String),
    /// Unknown route.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// Known route, wrong method.
    #[error("method not allowed here")]
    MethodNotAllowed,
    /// Request body too large.
    #[error("request body too large")]
    PayloadTooLarge,
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable code and HTTP status of each error: the one table clients rely on.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            Self::BadRequest(_) => ("bad_request", StatusCode::BAD_REQUEST),
            Self::InvalidId(_) => ("invalid_id", StatusCode::BAD_REQUEST),
            Self::UnknownImage(_) => ("unknown_image", StatusCode::NOT_FOUND),
            Self::InvalidAnnotator(_) => ("invalid_annotator", StatusCode::BAD_REQUEST),
            Self::InvalidLabel(_) => ("invalid_label", StatusCode::BAD_REQUEST),
            Self::InvalidCount { .. } => ("invalid_count", StatusCode::BAD_REQUEST),
            Self::NothingToUndo => ("nothing_to_undo", StatusCode::CONFLICT),
            Self::NotEmbedded(_) => ("not_embedded", StatusCode::CONFLICT),
            Self::ImageMissing { .. } => ("image_missing", StatusCode::NOT_FOUND),
            Self::ImageUnreadable { .. } => ("image_unreadable", StatusCode::UNPROCESSABLE_ENTITY),
            Self::NotAnImage(_) => ("not_an_image", StatusCode::UNPROCESSABLE_ENTITY),
            Self::TooManySeeds(_) => ("too_many_seeds", StatusCode::CONFLICT),
            Self::SeedFolderFull(_) => ("seed_folder_full", StatusCode::CONFLICT),
            Self::SeedTooLarge(_) => ("seed_too_large", StatusCode::UNPROCESSABLE_ENTITY),
            Self::StorageUnavailable(_) => ("storage_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            Self::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            Self::CrossSite(_) => ("cross_site", StatusCode::FORBIDDEN),
            Self::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            Self::MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            Self::PayloadTooLarge => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            Self::Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code_and_status().1
    }
    fn error_response(&self) -> HttpResponse {
        let (code, status) = self.code_and_status();
        let mut response = HttpResponse::build(status);
        if matches!(self, Self::Unauthorized) {
            // RFC 9110: a 401 names the scheme that would be accepted.
            response.insert_header(("WWW-Authenticate", "Bearer realm=\"binann\""));
        }
        response.json(serde_json::json!({ "error": { "code": code, "message": self.to_string() } }))
    }
}
