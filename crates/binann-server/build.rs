//! Lists every file of the page's folder (`web/` at the workspace root) so the server embeds the
//! whole folder, not a hand-written list: a file added to `web/` is served after the next build.

use std::path::{Path, PathBuf};

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let web = web.canonicalize().unwrap_or_else(|e| panic!("the page's folder {}: {e}", web.display()));
    // A directory: cargo rebuilds when any file under it changes, or one is added or removed.
    println!("cargo:rerun-if-changed={}", web.display());
    let mut files = Vec::new();
    walk(&web, &web, &mut files);
    files.sort();
    let mut out = String::from(
        "/// Every file of `web/`: its path under the folder, and its bytes.\npub(crate) const FILES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        out.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", path.display().to_string()));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("web_files.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}

/// Collects the regular files under `dir` (hidden names and symlinks left out) as
/// (URL path relative to `root`, absolute path).
fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        if name.starts_with('.') || kind.is_symlink() {
            continue;
        }
        let path = entry.path();
        if kind.is_dir() {
            walk(root, &path, files);
        } else if kind.is_file() {
            let rel = path.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
            assert!(
                rel.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)),
                "web/{rel}: a page file's name must be ASCII letters, digits, '.', '_', '-'"
            );
            files.push((rel, path));
        }
    }
}
