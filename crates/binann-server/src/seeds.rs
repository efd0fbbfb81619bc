//! Seed images on the server's side: checking that what a client or `--seed-images` gives is an
//! image, before [`binann_core::seeds`] keeps it in the run directory for the trainer.

use std::path::{Path, PathBuf};

use anyhow::Context;
use binann_core::manifest::{ScanError, is_image_name, list_images};
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
    let none_readable = |unreadable: usize| {
        anyhow::anyhow!(
            "--seed-images {}: no readable image in it ({unreadable} files with an image's name could not be read)",
            folder.display()
        )
    };
    // The same listing as the dataset's (recursive, sorted, symlinks not followed), with what
    // went wrong said of --seed-images rather than of the dataset.
    let names = match list_images(folder) {
        Ok(names) => names,
        Err(ScanError::Missing(_) | ScanError::NotADirectory(_)) => anyhow::bail!("--seed-images {}: no such folder", folder.display()),
        Err(ScanError::Empty { .. }) => return Err(none_readable(0)),
        Err(e) => return Err(e).with_context(|| format!("reading the seed images in {}", folder.display())),
    };
    let mut imported = Imported::default();
    for name in names {
        let path = folder.join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading the seed image {}", path.display()))?;
        let extension = match check_image(&bytes) {
            Ok(extension) => extension,
            Err(why) => {
                imported.unreadable.push((path, why));
                continue;
            }
        };
        match binann_core::seeds::add(seeds_dir, &bytes, extension) {
            Ok((_, true)) => imported.added += 1,
            Ok((_, false)) => imported.known += 1,
            Err(e @ SeedError::TooLarge { .. }) => imported.unreadable.push((path, e.to_string())),
            Err(e) => return Err(e).with_context(|| format!("keeping the seed image {}", path.display())),
        }
    }
    if imported.added + imported.known == 0 {
        return Err(none_readable(imported.unreadable.len()));
    }
    Ok(imported)
}
