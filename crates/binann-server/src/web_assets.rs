//! The page's files: the whole `web/` folder, compiled into the binary (`build.rs` lists it). The
//! server serves exactly these names and nothing else, so no request path ever reaches the file
//! system: a request only selects an entry of the embedded list.

use actix_web::{HttpResponse, web};

include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

/// Optional folder to serve the same files from (page development). Only names of the embedded
/// list are read from it; a file added there is served only after a rebuild.
#[derive(Debug, Clone)]
pub struct WebDir(pub Option<std::path::PathBuf>);

/// The file the page's root (`/`) serves.
const INDEX: &str = "index.html";

/// The content type of a page file, from its extension; `None` for one the server does not serve.
pub fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "html" => "text/html; charset=utf-8",
        // Module scripts are refused by browsers unless served with a JavaScript type.
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// Every URL path of the page (`/` and `/NAME` for each embedded file the server serves).
pub fn paths() -> impl Iterator<Item = String> {
    std::iter::once("/".to_owned()).chain(FILES.iter().filter(|(name, _)| content_type(name).is_some()).map(|(name, _)| format!("/{name}")))
}

/// Whether `path` is one of the page's files (served without the access token: they hold
/// nothing of the dataset, and the page must load to say that the token is missing).
pub fn is_page_path(path: &str) -> bool {
    path == "/" || path.strip_prefix('/').is_some_and(|name| lookup(name).is_some())
}

/// The embedded file called `name` (a path under `web/`), if it is served.
fn lookup(name: &str) -> Option<usize> {
    FILES.iter().position(|(n, _)| *n == name).filter(|&i| content_type(FILES[i].0).is_some())
}

/// Registers one route per embedded file, and `/` for the index.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let index = lookup(INDEX).expect("web/index.html is embedded");
    cfg.route("/", web::get().to(move |dir: web::Data<WebDir>| serve(index, dir)));
    for (i, (name, _)) in FILES.iter().enumerate() {
        if content_type(name).is_some() {
            cfg.route(&format!("/{name}"), web::get().to(move |dir: web::Data<WebDir>| serve(i, dir)));
        }
    }
}

async fn serve(index: usize, dir: web::Data<WebDir>) -> HttpResponse {
    let (name, builtin) = FILES[index];
    let body = match &dir.0 {
        Some(d) => std::fs::read(d.join(name)).unwrap_or_else(|_| builtin.to_vec()),
        None => builtin.to_vec(),
    };
    let mime = content_type(name).expect("only served names are routed");
    HttpResponse::Ok().content_type(mime).insert_header(("Cache-Control", "no-cache")).body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_folder_is_embedded_and_every_file_has_a_type() {
        let on_disk: Vec<String> = walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web"));
        let embedded: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(embedded, on_disk);
        for (name, bytes) in FILES {
            assert!(content_type(name).is_some(), "web/{name} has no content type: it would not be served");
            let disk = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web").join(name)).unwrap();
            assert_eq!(*bytes, &disk[..], "web/{name} differs from its embedded copy");
        }
        assert!(embedded.iter().any(|n| n == "index.html"));
        assert!(embedded.iter().any(|n| n.ends_with(".mjs")), "the page's modules");
    }

    #[test]
    fn scripts_are_javascript_and_unknown_names_are_not_page_paths() {
        assert_eq!(content_type("main.mjs"), Some("text/javascript; charset=utf-8"));
        assert_eq!(content_type("x.JS"), Some("text/javascript; charset=utf-8"));
        assert_eq!(content_type("README"), None);
        assert!(is_page_path("/"));
        assert!(is_page_path("/index.html"));
        assert!(is_page_path("/main.mjs"));
        for p in ["/api/stats", "/../Cargo.toml", "/main.mjs/", "/nothing.mjs", "", "main.mjs"] {
            assert!(!is_page_path(p), "{p}");
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let kind = e.file_type().unwrap();
                if name.starts_with('.') || kind.is_symlink() {
                    continue;
                }
                if kind.is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}
