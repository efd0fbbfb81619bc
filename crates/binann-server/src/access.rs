//! Who may use the API. Each request is judged once, on the path actix routes it by (`judge`);
//! then three guards run before every handler ([`guard`]):
//!
//! - **The addressed host.** Without a token, a request must be addressed (`Host`) to an IP
//!   address, `localhost` or a name of `--allowed-hosts`, and on loopback to a loopback name
//!   (`Access::host_refusal`): DNS rebinding otherwise makes another site's page this server's
//!   own origin.
//! - **The access token.** A server listening beyond loopback can be reached by anyone on the
//!   network, so it requires a token ([`Access::decide`]): given by `--token`, or generated at
//!   start and printed as the URL to open. Opening `/?token=TOKEN` stores it in an HttpOnly,
//!   SameSite=Strict cookie (Secure when the page is served over HTTPS); scripts send
//!   `Authorization: Bearer TOKEN`. Without it every API and image route answers 401. The page's
//!   own files and `/health` stay open, so the page can say what is missing.
//! - **Cross-site requests.** Any page the annotator has open in another tab can make their
//!   browser send requests to binann, even to 127.0.0.1, with the annotator's cookies: a form post
//!   or a `no-cors` fetch with a `text/plain` body needs no CORS preflight. Such a request cannot
//!   carry `Content-Type: application/json` (that needs a preflight, which binann never grants),
//!   and browsers say where it comes from (`Origin`, `Sec-Fetch-Site`). So every request that
//!   changes state must have a JSON content type (or no body), and must not come from another
//!   site; a refused one gets 403 `cross_site` before any handler runs, so it changes nothing.
//!   Scripts send neither header and pass.
//!
//! What a request may do is decided on the path the router matches (percent-decoded), never on
//! the path as sent: `/api/%6Eext` reaches the same handler as `/api/next`. Only the routes listed
//! as read-only (`READ_ONLY_ROUTES`) and the page's files count as not changing anything; any
//! other request, a route added later included, is held to the cross-site rule.
//!
//! The token is not encryption: over plain HTTP anyone who can watch the network sees it (docs/security.md:
//! put a reverse proxy with TLS in front on an open network).

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
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
/// The routes that only read, as the router's patterns (`crate::configure` registers them), for
/// GET and HEAD; the page's files ([`crate::web_assets::is_page_path`]) are read-only too. Every
/// other request counts as changing something, so a route missing here is refused cross-site
/// rather than let through.
const READ_ONLY_ROUTES: &[&str] = &["/api/stats", "/api/history", "/api/images/{id}", "/health"];
/// The routes served without the token besides the page's own files: the health check.
const PUBLIC_ROUTES: &[&str] = &["/health"];

/// The patterns above, matched as the router matches them.
static READ_ONLY: LazyLock<Vec<ResourceDef>> = LazyLock::new(|| READ_ONLY_ROUTES.iter().map(|p| ResourceDef::new(*p)).collect());
static PUBLIC: LazyLock<Vec<ResourceDef>> = LazyLock::new(|| PUBLIC_ROUTES.iter().map(|p| ResourceDef::new(*p)).collect());

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
    /// Which names a request may be addressed to (see [`Access::host_refusal`]).
    hosts: HostRule,
    /// Names given with `--allowed-hosts`, lower-case.
    allowed_hosts: Vec<String>,
}

/// Which `Host` a request may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostRule {
    /// Any: the token keeps other sites out, whatever name they reach the server by.
    Any,
    /// No token on loopback: a loopback name (`localhost`, 127.0.0.0/8, `::1`) or an allowed one.
    Loopback,
    /// No token beyond loopback (`--no-auth`): an IP address, `localhost` or an allowed name.
    AddressOrListed,
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
        let access = |token, generated, hosts| Access {
            token,
            generated,
            cookie_name: format!("binann_token_{}", local.port()),
            hosts,
            allowed_hosts: config.allowed_hosts.iter().filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase()).collect(),
        };
        let none = || Ok(access(None, false, if loopback { HostRule::Loopback } else { HostRule::AddressOrListed }));
        match config.token.as_deref() {
            Some("") if loopback || config.no_auth => none(),
            Some("") => Err(AccessError::TokenRequired { addr: local }),
            Some(_) if config.no_auth => Err(AccessError::TokenAndNoAuth),
            Some(given) if !valid_token(given) => Err(AccessError::BadToken),
            Some(given) => Ok(access(Some(given.to_owned()), false, HostRule::Any)),
            None if loopback || config.no_auth => none(),
            None => Ok(access(Some(generate_token()), true, HostRule::Any)),
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

    /// DNS rebinding: a page of `evil.example`, whose name the attacker then points at this
    /// machine, talks to the server as its own origin (Origin and Host both say `evil.example`),
    /// so the cross-site check alone lets it through. Without a token the server therefore
    /// answers only requests addressed to a name the attacker cannot re-point, as Jupyter and
    /// Django (`ALLOWED_HOSTS`) do: an IP address (on loopback, a loopback one), `localhost`, or a
    /// name the operator listed with `--allowed-hosts`. A request without `Host` (HTTP/1.0) is
    /// not a browser's and passes.
    fn host_refusal(&self, req: &ServiceRequest) -> Option<String> {
        if self.hosts == HostRule::Any {
            return None;
        }
        let value = req.headers().get(header::HOST)?;
        let Ok(host) = value.to_str() else { return Some("the request's Host is not text".to_owned()) };
        if host.is_empty() {
            return None;
        }
        let name = host_name(host);
        let listed = name.eq_ignore_ascii_case("localhost") || self.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(name));
        let address = name.parse::<IpAddr>().is_ok_and(|ip| self.hosts == HostRule::AddressOrListed || ip.is_loopback());
        if listed || address {
            return None;
        }
        let expected = match self.hosts {
            HostRule::Loopback => "a loopback name (localhost, 127.0.0.1, [::1])",
            _ => "an IP address or localhost",
        };
        Some(format!(
            "the request is addressed to {host:?}, which is neither {expected} nor a name of --allowed-hosts (BINANN_ALLOWED_HOSTS); \
             without an access token binann answers only those (a foreign site re-pointing its name here: DNS rebinding)"
        ))
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

/// The name part of a `Host` value: without the port, and without the brackets of an IPv6 address.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
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

/// What the guards need to know of a request, decided in this one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Judged {
    /// Served without the token: the page's files and the health check.
    public: bool,
    /// The page's root, where `?token=` is turned into the cookie.
    root: bool,
    /// May change what the server holds: anything but a GET or HEAD of a read-only route, or an
    /// OPTIONS. `GET /api/next` changes state: it reserves images for the asking client (another
    /// site could otherwise keep the annotator's images handed out to phantom clients). No route
    /// answers OPTIONS (every one reaches `method_not_allowed` or `not_found`), so a CORS preflight
    /// gets its plain 405 and nothing is granted.
    changes_state: bool,
}

/// Judges a request on the path the router matches it by: `match_info().as_str()`, the request's
/// path percent-decoded by actix's `Url` except `%2F`, `%25` and `%2B`, and otherwise as sent
/// (routes match it case-sensitively, with no merging of slashes and no trailing-slash or
/// dot-segment handling). The same [`ResourceDef`] patterns matched against the same string
/// reach the same verdict as the router: whatever encoding a request uses for `/api/next`, if
/// it reaches that handler it is judged as `/api/next`, and if it is not recognised it is judged
/// as changing state, which costs at most a 403 where a 404 was due.
fn judge(req: &ServiceRequest) -> Judged {
    let path = req.match_info().as_str();
    let page = crate::web_assets::is_page_path(path);
    let read_only = page || READ_ONLY.iter().any(|route| route.is_match(path));
    let reads = match *req.method() {
        Method::GET | Method::HEAD => read_only,
        Method::OPTIONS => true,
        _ => false,
    };
    Judged { public: page || PUBLIC.iter().any(|route| route.is_match(path)), root: path == "/", changes_state: !reads }
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
    let judged = judge(&req);
    if judged.root
        && let Some(redirect) = token_cookie_redirect(&access, &req)
    {
        return Ok(req.into_response(redirect).map_into_right_body());
    }
    if let Some(why) = access.host_refusal(&req) {
        tracing::warn!(method = %req.method(), path = req.path(), "refused a request: {why}");
        return Ok(req.into_response(refusal(ApiError::CrossSite(why))).map_into_right_body());
    }
    if !judged.public && !access.admits(&req) {
        return Ok(req.into_response(refusal(ApiError::Unauthorized)).map_into_right_body());
    }
    if judged.changes_state
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
/// is missing. The cookie is Secure when the page is served over HTTPS: by a TLS listener, or by a
/// proxy that says so (`X-Forwarded-Proto: https`, `Forwarded: proto=https`; actix's
/// `connection_info` reads both), so the browser never sends it over plain HTTP. A client that
/// claims HTTPS falsely only makes its own browser drop the cookie.
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
        .secure(req.connection_info().scheme().eq_ignore_ascii_case("https"))
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

    fn request(method: Method, uri: &str, host: Option<&str>) -> ServiceRequest {
        let mut r = actix_web::test::TestRequest::default().method(method).uri(uri);
        if let Some(host) = host {
            r = r.insert_header((header::HOST, host));
        }
        r.to_srv_request()
    }

    #[test]
    fn requests_are_judged_on_the_path_the_router_matches() {
        let judged = |method, uri| judge(&request(method, uri, None));
        // Spellings of /api/next that reach its handler, and ones that reach none: all change state.
        for uri in [
            "/api/next?count=2",
            "/api/%6Eext",
            "/api/n%65xt",
            "/%61pi/next",
            "/%61%70%69/%6e%65%78%74",
            "/api/NEXT",
            "/api/next/",
            "/api//next",
            "/api%2Fnext",
            "/api/stats/",
            "/API/stats",
            "/nothing",
        ] {
            assert!(judged(Method::GET, uri).changes_state, "GET {uri}");
        }
        for uri in
            ["/api/stats", "/api/%73tats", "/api/images/3", "/api/%69mages/3", "/health", "/%68ealth", "/", "/index.html", "/%69ndex.html"]
        {
            assert!(!judged(Method::GET, uri).changes_state, "GET {uri}");
            assert!(!judged(Method::HEAD, uri).changes_state, "HEAD {uri}");
            assert!(judged(Method::POST, uri).changes_state, "POST {uri}");
            assert!(judged(Method::DELETE, uri).changes_state, "DELETE {uri}");
        }
        for uri in ["/health", "/%68ealth", "/", "/main.mjs", "/m%61in.mjs"] {
            assert!(judged(Method::GET, uri).public, "{uri}");
        }
        for uri in ["/api/stats", "/health/", "/api/next", "/%2Fhealth", "/nothing"] {
            assert!(!judged(Method::GET, uri).public, "{uri}");
        }
        assert!(judged(Method::GET, "/?token=x").root);
        assert!(!judged(Method::GET, "/index.html?token=x").root);
        assert!(!judged(Method::GET, "/%2F?token=x").root);
    }

    #[test]
    fn without_a_token_only_addresses_localhost_and_allowed_names_are_answered() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let answered = |access: &Access, host: &str| access.host_refusal(&request(Method::GET, "/api/stats", Some(host))).is_none();
        let allowed = ["--allowed-hosts", "LabelBox,labels.example.org"];
        let loopback = Access::decide(&config(&allowed), lo).unwrap();
        let mut no_auth_args = vec!["--no-auth"];
        no_auth_args.extend(allowed);
        let no_auth = Access::decide(&config(&no_auth_args), any).unwrap();
        let names = [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "[::1]",
            "labelbox:8080",
            "Labels.Example.Org",
            "",
        ];
        for host in names {
            assert!(answered(&loopback, host), "loopback, Host {host:?}");
            assert!(answered(&no_auth, host), "--no-auth, Host {host:?}");
        }
        for host in ["192.168.1.20:8080", "10.0.0.1", "[2001:db8::1]:8080", "[fe80::1]"] {
            assert!(!answered(&loopback, host), "loopback, Host {host:?}");
            assert!(answered(&no_auth, host), "--no-auth, Host {host:?}");
        }
        for host in ["rebound.example:8080", "evil", "localhost.:8080", "labelbox.evil.example", "127.0.0.1.evil.example", "example.org"] {
            assert!(!answered(&loopback, host), "loopback, Host {host:?}");
            assert!(!answered(&no_auth, host), "--no-auth, Host {host:?}");
        }
        let why = no_auth.host_refusal(&request(Method::GET, "/", Some("rebound.example:8080"))).unwrap();
        assert!(why.contains("--allowed-hosts") && why.contains("rebound.example"), "{why}");
        let with_token = Access::decide(&config(&["--token", "a-given-token-0123456789"]), any).unwrap();
        assert!(answered(&with_token, "rebound.example:8080"), "the token keeps other sites out");
        assert!(answered(&Access::decide(&config(&[]), any).unwrap(), "rebound.example:8080"), "a generated token too");
    }

    #[test]
    fn allowed_hosts_are_names_without_scheme_or_port() {
        assert_eq!(config(&["--allowed-hosts", "LabelBox, labels.example.org"]).allowed_hosts, ["labelbox", "labels.example.org"]);
        assert!(config(&[]).allowed_hosts.is_empty());
        for bad in ["labelbox:8080", "http://labelbox", "labelbox/", "[::1]"] {
            let all = ["binann-server", "--datadir", "d", "--rundir", "r", "--allowed-hosts", bad];
            assert!(ServerConfig::try_parse_from(all).is_err(), "{bad}");
        }
        // An empty entry (`BINANN_ALLOWED_HOSTS=`, a trailing comma) names nothing, not an empty host.
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for list in ["", "labelbox,,", ",labelbox"] {
            let access = Access::decide(&config(&["--allowed-hosts", list]), lo).unwrap();
            assert!(access.host_refusal(&request(Method::GET, "/", Some(":8080"))).is_some(), "{list:?}");
            let labelbox = access.host_refusal(&request(Method::GET, "/", Some("labelbox:8080")));
            assert_eq!(labelbox.is_none(), list.contains("labelbox"), "{list:?}");
        }
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
