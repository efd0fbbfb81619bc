//! The page's files, compiled into the binary: the server serves exactly these names and nothing
//! else, so no request path ever reaches the file system.

use actix_web::{HttpResponse, web};

/// Optional folder to serve the same files from (page development).
#[derive(Debug, Clone)]
pub struct WebDir(pub Option<std::path::PathBuf>);

/// (URL path, file name, content type, built-in content)
const ASSETS: &[(&str, &str, &str, &str)] = &[
    ("/", "index.html", "text/html; charset=utf-8", include_str!("../../../web/index.html")),
    ("/app.js", "app.js", "text/javascript; charset=utf-8", include_str!("../../../web/app.js")),
    ("/style.css", "style.css", "text/css; charset=utf-8", include_str!("../../../web/style.css")),
];

/// Registers one route per asset.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (index, (url, ..)) in ASSETS.iter().enumerate() {
        cfg.route(url, web::get().to(move |dir: web::Data<WebDir>| serve(index, dir)));
    }
}

async fn serve(index: usize, dir: web::Data<WebDir>) -> HttpResponse {
    let (_, name, mime, builtin) = ASSETS[index];
    let body = match &dir.0 {
        Some(d) => std::fs::read_to_string(d.join(name)).unwrap_or_else(|_| builtin.to_owned()),
        None => builtin.to_owned(),
    };
    HttpResponse::Ok().content_type(mime).insert_header(("Cache-Control", "no-cache")).body(body)
}
