//! Atomic file replacement: a reader sees the old file or the new one, never half of either,
//! even if the writer is killed mid-write or the machine loses power.

use std::io::Write;
use std::path::Path;

use crate::codec::FileError;

/// Suffix of the temporary files [`write_atomic`] creates; leftovers of a killed writer carry it.
pub const TEMP_SUFFIX: &str = ".binann-tmp";

/// Writes `bytes` to a temp file beside `path`, fsyncs it, renames it over `path`, fsyncs the dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = parent_dir(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut tmp =
        tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(TEMP_SUFFIX).tempfile_in(dir).map_err(|e| FileError::io(path, e))?;
    tmp.write_all(bytes).map_err(|e| FileError::io(path, e))?;
    // tempfile creates 0600; run-directory files are read by other users' processes on shared disks.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| FileError::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| FileError::io(path, e))?;
    tmp.persist(path).map_err(|e| FileError::io(path, e.error))?;
    sync_dir(dir).map_err(|e| FileError::io(path, e))
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory so a rename or a new file in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes temp files left by writers that were killed mid-write; returns how many.
pub fn remove_stale_temps(dir: &Path, older_than: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let old_enough =
            entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= older_than);
        if old_enough && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
