//! Who may use the API. Two guards run before every handler ([`guard`]):
//!
//! - **The access token.** A server listening beyond loopback can be reached by anyone on the
//!   network, so it requires a token ([`Access::decide`]): given by `--token`, or generated at
//!   start and printed as the URL to open. Opening `/?token=TOKEN` stores it in an HttpOnly,
//!   SameSite=Strict cookie; scripts send `Authorization: Bearer TOKEN`. Without it every API and
//!   image route answers 401. The page's own files and `/health` stay open, so the page can say
//!   what is missing.
//! - **Cross-site requests.** Any page the annotator has open in another tab can make their
//!   browser send requests to binann, even to 127.0.0.1, with the annotator's cookies: a form post
//!   or a `no-cors` fetch with a `text/plain` body needs no CORS preflight. Such a request cannot
//!   carry `Content-Type: application/json` (that needs a preflight, which binann never grants),
//!   and browsers say where it comes from (`Origin`, `Sec-Fetch-Site`). So every request that
//!   changes state must have a JSON content type (or no body), and must not come from another
//!   site; a refused one gets 403 `cross_site` before any handler runs, so it changes nothing.
//!   Scripts send neither header and pass.
//!
//! The token is not encryption: over plain HTTP anyone who can watch the network sees it (README:
//! put a reverse proxy with TLS in front on an open network).

use std::net::SocketAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};

use crate::config::ServerConfig;
use crate::error::ApiError;

/// Fewest characters of a token given with `--token`: shorter ones can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;
/// Characters of a generated token (hex of 32 random bytes).
const GENERATED_TOKEN_LEN: usize = 64;
/// How long the browser keeps the token cookie (a restarted server with a new token makes it
/// stale sooner; the page then says to open the new URL).
const TOKEN_COOKIE_DAYS: i64 = 30;
/// Paths served without the token besides the page's own files (see
/// [`crate::web_assets::is_page_path`]): the health check.
const PUBLIC_PATHS: &[&str] = &["/health"];

/// Why the server refuses to start with the access options it was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    /// Beyond loopback with the token explicitly empty, and without `--no-auth`.
    #[error(
        "refusing to serve on {addr}, which other machines can reach, with the access token set empty: anyone who can reach \
         it could label and read every image. Leave BINANN_TOKEN/--token unset to have a token generated, give one, or \
         pass --no-auth (BINANN_NO_AUTH=true) to serve without a token (only behind something that lets in only the right people)"
    )]
    TokenRequired {
        /// The address listened on.
        addr: SocketAddr,
    },
    /// A token and `--no-auth` together.
    #[error("--token (BINANN_TOKEN) and --no-auth (BINANN_NO_AUTH) contradict each other: give one of them")]
    TokenAndNoAuth,
    /// A token too short or with characters that do not survive a URL or a cookie unchanged.
    #[error(
        "the access token must be at least {MIN_TOKEN_LEN} characters of A-Z, a-z, 0-9, '-', '_', '.' or '~' (it goes into a URL and a cookie as is)"
    )]
    BadToken,
}

/// The access decision for one server: which token, if any, every API request must carry.
#[derive(Debug, Clone)]
pub struct Access {
    token: Option<String>,
    generated: bool,
    cookie_name: String,
    /// Open to this machine only, with no token: the `Host` a request names must then be a
    /// loopback one (see [`Access::host_refusal`]).
    loopback_without_token: bool,
}

impl Access {
    /// Decides from the options and the address actually listened on (after binding, so
    /// `localhost` or a host name is judged by the address it became).
    ///
    /// - A token given: required, whatever the address.
    /// - No token, loopback: none required (only this machine can connect).
    /// - No token, beyond loopback: one is generated, unless `--no-auth`.
    /// - The token set empty (the explicit "no token"): beyond loopback refused unless `--no-auth`.
    pub fn decide(config: &ServerConfig, local: SocketAddr) -> Result<Self, AccessError> {
        let loopback = local.ip().is_loopback();
        let cookie_name = format!("binann_token_{}", local.port());
        let none = |cookie_name| Ok(Access { token: None, generated: false, cookie_name, loopback_without_token: loopback });
        match config.token.as_deref() {
            Some("") if loopback || config.no_auth => none(cookie_name),
            Some("") => Err(AccessError::TokenRequired { addr: local }),
            Some(_) if config.no_auth => Err(AccessError::TokenAndNoAuth),
            Some(given) if !valid_token(given) => Err(AccessError::BadToken),
            Some(given) => Ok(Access { token: Some(given.to_owned()), generated: false, cookie_name, loopback_without_token: false }),
            None if loopback || config.no_auth => none(cookie_name),
            None => Ok(Access { token: Some(generate_token()), generated: true, cookie_name, loopback_without_token: false }),
        }
    }

    /// The token every API request must carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// True when the token was generated at start (and so must be printed to be known).
    pub fn generated(&self) -> bool {
        self.generated
    }

    /// The URL that opens the page and stores the token in the browser; `host` is how people
    /// reach the server. `None` when no token is required.
    pub fn open_url(&self, host: &str, port: u16) -> Option<String> {
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
        self.token.as_ref().map(|t| format!("http://{host}:{port}/?token={t}"))
    }

    /// The cookie's name: it carries the port, since browsers share cookies between the ports of
    /// one host, and two binann servers on one machine must not overwrite each other's token.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// DNS rebinding: a page of `evil.example`, whose name the attacker then points at 127.0.0.1,
    /// talks to a loopback server as its own origin (Origin and Host both say `evil.example`), so
    /// the cross-site check alone lets it through. Without a token, a loopback server therefore
    /// answers only requests addressed to a loopback name, as Jupyter does.
    fn host_refusal(&self, req: &ServiceRequest) -> Option<String> {
        if !self.loopback_without_token {
            return None;
        }
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let loopback =
            name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || host.is_empty();
        (!loopback).then(|| format!("the request is addressed to {host:?}, not to this machine's loopback name (DNS rebinding?)"))
    }

    fn admits(&self, req: &ServiceRequest) -> bool {
        let Some(token) = &self.token else { return true };
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned());
        let presented = bearer.or_else(|| req.cookie(&self.cookie_name).map(|c| c.value().to_owned()));
        presented.is_some_and(|p| same_secret(p.as_bytes(), token.as_bytes()))
    }
}

fn valid_token(t: &str) -> bool {
    t.len() >= MIN_TOKEN_LEN && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

/// 32 bytes from the thread's CSPRNG (rand's ThreadRng is cryptographically secure), as hex.
fn generate_token() -> String {
    let bytes: [u8; GENERATED_TOKEN_LEN / 2] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time that depends only on their lengths, so that timing the answers
/// cannot reveal how many leading characters of a guess are right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

/// True for requests that change what the server holds: every method but GET, HEAD and OPTIONS,
/// and `GET /api/next`, which reserves images for the asking client (another site could otherwise
/// keep the annotator's images handed out to phantom clients).
fn changes_state(req: &ServiceRequest) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) || req.path() == "/api/next"
}

/// Why a request looks cross-site, or `None` when it may pass.
fn cross_site(req: &ServiceRequest) -> Option<String> {
    let headers = req.headers();
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && (site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site"))
    {
        return Some(format!("the browser says this request comes from another site's page (Sec-Fetch-Site: {site})"));
    }
    if let Some(origin) = text(header::ORIGIN)
        && !origin_is_this_server(&origin, req)
    {
        return Some(format!("the request comes from a page of {origin}, not of this server"));
    }
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    match text(header::CONTENT_TYPE) {
        Some(ct) if !is_json(&ct) => Some(format!(
            "Content-Type {ct:?}: a request that changes something must send application/json (a form or another site can send {ct:?})"
        )),
        None if has_body(req) => Some("a body without Content-Type: application/json".to_owned()),
        _ => None,
    }
}

fn is_json(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|n| n.trim() != "0")
}

/// True when `origin` (`scheme://host[:port]`) names the host the request was sent to: its `Host`
/// header, or `X-Forwarded-Host` behind a reverse proxy (a page cannot set that header on a
/// cross-site request without a preflight). The scheme is not compared: a proxy may end TLS.
fn origin_is_this_server(origin: &str, req: &ServiceRequest) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let normalise = |host: &str| {
        let host = host.trim().to_ascii_lowercase();
        host.strip_suffix(default_port).map(str::to_owned).unwrap_or(host)
    };
    let origin_host = normalise(authority);
    [header::HOST, header::HeaderName::from_static("x-forwarded-host")]
        .iter()
        .filter_map(|name| req.headers().get(name).and_then(|v| v.to_str().ok()))
        .flat_map(|v| v.split(','))
        .any(|host| normalise(host) == origin_host)
}

/// The middleware: the token first (who may ask at all), then the cross-site check (whether this
/// request may change anything). Also turns `GET /?token=TOKEN` into the token cookie.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(access) = req.app_data::<web::Data<Access>>().cloned() else {
        // Fail closed: a server assembled without an access decision serves nothing.
        let refusal = ApiError::Internal("the server has no access decision".into()).error_response();
        return Ok(req.into_response(refusal).map_into_right_body());
    };
    if req.path() == "/"
        && let Some(redirect) = token_cookie_redirect(&access, &req)
    {
        return Ok(req.into_response(redirect).map_into_right_body());
    }
    if let Some(why) = access.host_refusal(&req) {
        tracing::warn!(method = %req.method(), path = req.path(), "refused a request: {why}");
        return Ok(req.into_response(refusal(ApiError::CrossSite(why))).map_into_right_body());
    }
    if !PUBLIC_PATHS.contains(&req.path()) && !crate::web_assets::is_page_path(req.path()) && !access.admits(&req) {
        return Ok(req.into_response(refusal(ApiError::Unauthorized)).map_into_right_body());
    }
    if changes_state(&req)
        && let Some(why) = cross_site(&req)
    {
        tracing::warn!(method = %req.method(), path = req.path(), "refused a cross-site request: {why}");
        return Ok(req.into_response(refusal(ApiError::CrossSite(why))).map_into_right_body());
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// The answer to a refused request. The connection is closed after it: the request's body was
/// never read, so the connection cannot carry another request, and a client that reused it would
/// find it cut.
fn refusal(error: ApiError) -> HttpResponse {
    let mut response = error.error_response();
    response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// `GET /?token=RIGHT` stores the token in a cookie and redirects to `/`, so the token leaves the
/// address bar and the history. A wrong token changes nothing: the page loads and says the token
/// is missing.
fn token_cookie_redirect(access: &Access, req: &ServiceRequest) -> Option<HttpResponse> {
    let token = access.token()?;
    let given = req.query_string().split('&').find_map(|pair| pair.strip_prefix("token="))?;
    if !same_secret(given.as_bytes(), token.as_bytes()) {
        return None;
    }
    let cookie = Cookie::build(access.cookie_name().to_owned(), token.to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::days(TOKEN_COOKIE_DAYS))
        .finish();
    Some(
        HttpResponse::SeeOther()
            .cookie(cookie)
            .insert_header((header::LOCATION, "/"))
            .insert_header(("Cache-Control", "no-store"))
            .finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> ServerConfig {
        let mut all = vec!["binann-server", "--datadir", "d", "--rundir", "r"];
        all.extend_from_slice(args);
        ServerConfig::try_parse_from(all).unwrap()
    }

    #[test]
    fn the_decision_follows_the_address_and_the_options() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "192.168.1.20:8080".parse().unwrap();
        assert_eq!(Access::decide(&config(&[]), lo).unwrap().token(), None);
        assert_eq!(Access::decide(&config(&[]), lo6).unwrap().token(), None);
        for addr in [any, lan] {
            let generated = Access::decide(&config(&[]), addr).unwrap();
            assert!(generated.generated());
            assert_eq!(generated.token().unwrap().len(), GENERATED_TOKEN_LEN);
            assert_ne!(generated.token(), Access::decide(&config(&[]), addr).unwrap().token(), "every start draws a new token");
            assert_eq!(Access::decide(&config(&["--no-auth"]), addr).unwrap().token(), None);
            assert_eq!(Access::decide(&config(&["--token", ""]), addr).unwrap_err(), AccessError::TokenRequired { addr });
            assert_eq!(Access::decide(&config(&["--token", "", "--no-auth"]), addr).unwrap().token(), None);
        }
        let given = "a-given-token-0123456789";
        assert_eq!(Access::decide(&config(&["--token", given]), lo).unwrap().token(), Some(given), "a given token is required anywhere");
        assert!(!Access::decide(&config(&["--token", given]), any).unwrap().generated());
        assert_eq!(Access::decide(&config(&["--token", given, "--no-auth"]), any).unwrap_err(), AccessError::TokenAndNoAuth);
        assert_eq!(Access::decide(&config(&["--token", "short"]), any).unwrap_err(), AccessError::BadToken);
        assert_eq!(Access::decide(&config(&["--token", "has spaces and is long"]), any).unwrap_err(), AccessError::BadToken);
        assert_eq!(Access::decide(&config(&["--no-auth", "false"]), any).unwrap().token().map(str::len), Some(GENERATED_TOKEN_LEN));
        let open = Access::decide(&config(&["--token", given]), any).unwrap();
        assert_eq!(open.open_url("myhost", 8080).unwrap(), format!("http://myhost:8080/?token={given}"));
        assert_eq!(open.open_url("::1", 8080).unwrap(), format!("http://[::1]:8080/?token={given}"));
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret(b"abcdef", b"abcdef"));
        assert!(!same_secret(b"abcdef", b"abcdeg"));
        assert!(!same_secret(b"abcdef", b"abcde"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn json_content_types() {
        for ok in ["application/json", "application/json; charset=utf-8", "Application/JSON"] {
            assert!(is_json(ok), "{ok}");
        }
        for refused in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp", ""] {
            assert!(!is_json(refused), "{refused}");
        }
    }
}
