//! Seed images on the server's side: checking that what a client or `--seed-images` gives is an
//! image, before [`binann_core::seeds`] keeps it in the run directory for the trainer.

use std::path::{Path, PathBuf};

use anyhow::Context;
use binann_core::manifest::is_image_name;
use binann_core::seeds::{MAX_SEED_BYTES, SeedError};

/// Largest `POST /api/seeds` body: a seed image of [`MAX_SEED_BYTES`] in base64, plus the JSON
/// around it.
pub const MAX_BODY_BYTES: usize = MAX_SEED_BYTES / 3 * 4 + 4 * 1024;

/// Decodes `bytes` in full and returns the file extension of their format. A seed image the
/// trainer could not decode would be left out without the person knowing; checking here lets the
/// page say so at once.
pub fn check_image(bytes: &[u8]) -> Result<&'static str, String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    let format = reader.format().ok_or("not a known image format (PNG, JPEG, WebP, BMP, GIF, TIFF)")?;
    let extension = format.extensions_str().first().copied().filter(|e| is_image_name(&format!("x.{e}")));
    let extension = extension.ok_or_else(|| format!("{format:?} images are not read by binann"))?;
    reader.decode().map_err(|e| e.to_string())?;
    Ok(extension)
}

/// What [`import_folder`] did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Seed images new to the run directory.
    pub added: usize,
    /// Seed images it already held.
    pub known: usize,
    /// Files with an image's name that are not readable images, and why.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Copies every image under `folder` (recursively) into `seeds_dir`. A missing folder, or one
/// without a single readable image, is an error: the person asked for examples and would get none.
pub fn import_folder(folder: &Path, seeds_dir: &Path) -> anyhow::Result<Imported> {
    anyhow::ensure!(folder.is_dir(), "--seed-images {}: no such folder", folder.display());
    let mut imported = Imported::default();
    for entry in walkdir::WalkDir::new(folder).sort_by_file_name() {
        let entry = entry.with_context(|| format!("reading the seed images in {}", folder.display()))?;
        if !entry.file_type().is_file() || !entry.file_name().to_str().is_some_and(is_image_name) {
            continue;
        }
        let path = entry.path();
        let bytes = std::fs::read(path).with_context(|| format!("reading the seed image {}", path.display()))?;
        let extension = match check_image(&bytes) {
            Ok(extension) => extension,
            Err(why) => {
                imported.unreadable.push((path.to_owned(), why));
                continue;
            }
        };
        match binann_core::seeds::add(seeds_dir, &bytes, extension) {
            Ok((_, true)) => imported.added += 1,
            Ok((_, false)) => imported.known += 1,
            Err(e @ SeedError::TooLarge { .. }) => imported.unreadable.push((path.to_owned(), e.to_string())),
            Err(e) => return Err(e).with_context(|| format!("keeping the seed image {}", path.display())),
        }
    }
    anyhow::ensure!(
        imported.added + imported.known > 0,
        "--seed-images {}: no readable image in it ({} files with an image's name could not be read)",
        folder.display(),
        imported.unreadable.len()
    );
    Ok(imported)
}
