//! Seed images on the server's side: checking that what a client or `--seed-images` gives is an
//! image, before [`binann_core::seeds`] keeps it in the run directory for the trainer.
//!
//! The check decodes the image, and a small file can decode to gigabytes: the header is checked
//! against [`ImageLimits::SEED`] first, and at most [`MAX_CONCURRENT_DECODES`] decodes run at
//! once ([`decode_permit`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use binann_core::image_limits::{ImageLimitError, ImageLimits, TooLarge};
use binann_core::manifest::{ScanError, is_image_name, list_images};
use binann_core::seeds::{MAX_SEED_BYTES, SeedError};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Largest `POST /api/seeds` body: a seed image of [`MAX_SEED_BYTES`] in base64, plus the JSON
/// around it.
pub const MAX_BODY_BYTES: usize = MAX_SEED_BYTES / 3 * 4 + 4 * 1024;

/// Most seed images decoded at once. Each decode may take [`ImageLimits::SEED`]'s byte budget,
/// so two bound the decoded seeds at 512 MiB; two also keep a second core busy when a person
/// drops several photos at once, each a fraction of a second to decode.
pub const MAX_CONCURRENT_DECODES: usize = 2;

static DECODES: Semaphore = Semaphore::const_new(MAX_CONCURRENT_DECODES);

/// Waits for one of the [`MAX_CONCURRENT_DECODES`] places; hold it across
/// [`check_decodes`]. Uploads over the bound wait rather than fail: a person dropping ten photos
/// on the page wants all ten kept, and a waiting upload holds only its request body, which the
/// server has read already.
pub async fn decode_permit() -> SemaphorePermit<'static> {
    DECODES.acquire().await.expect("the semaphore is never closed")
}

/// Why a seed image was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not an image binann reads: unknown format, corrupt, truncated.
    #[error("{0}")]
    NotAnImage(String),
    /// An image larger than a seed may be, found from its header.
    #[error("{0}")]
    TooLarge(TooLarge),
}

impl From<ImageLimitError> for Refused {
    fn from(e: ImageLimitError) -> Self {
        match e {
            ImageLimitError::TooLarge(e) => Self::TooLarge(e),
            ImageLimitError::Image(e) => Self::NotAnImage(e.to_string()),
        }
    }
}

/// Reads `bytes`' header only and returns the file extension of their format; refuses what is not
/// an image binann reads, or larger than [`ImageLimits::SEED`] allows. Cheap: no pixel decoded.
pub fn check_header(bytes: &[u8]) -> Result<&'static str, Refused> {
    let opened = ImageLimits::SEED.open_bytes(bytes)?;
    let format = opened.format;
    let extension = format.extensions_str().first().copied().filter(|e| is_image_name(&format!("x.{e}")));
    extension.ok_or_else(|| Refused::NotAnImage(format!("{format:?} images are not read by binann")))
}

/// Decodes `bytes` in full within [`ImageLimits::SEED`]. A seed image the trainer could not decode
/// would be left out without the person knowing; checking here lets the page say so at once. Call
/// it holding a [`decode_permit`] where requests may come in at once.
pub fn check_decodes(bytes: &[u8]) -> Result<(), Refused> {
    let opened = ImageLimits::SEED.open_bytes(bytes)?;
    opened.decode().map_err(|e| Refused::NotAnImage(e.to_string()))?;
    Ok(())
}

/// [`check_header`], then [`check_decodes`]: whether `bytes` are a seed image, and the extension of
/// their format.
pub fn check_image(bytes: &[u8]) -> Result<&'static str, Refused> {
    let extension = check_header(bytes)?;
    check_decodes(bytes)?;
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
        // The same folder at every start: what is kept already needs no second decode.
        if binann_core::seeds::find(seeds_dir, &bytes).is_some() {
            imported.known += 1;
            continue;
        }
        let extension = match check_image(&bytes) {
            Ok(extension) => extension,
            Err(why) => {
                imported.unreadable.push((path, why.to_string()));
                continue;
            }
        };
        match binann_core::seeds::add(seeds_dir, &bytes, extension) {
            Ok((_, true)) => imported.added += 1,
            Ok((_, false)) => imported.known += 1,
            Err(e @ (SeedError::TooLarge { .. } | SeedError::FolderFull { .. })) => imported.unreadable.push((path, e.to_string())),
            Err(e) => return Err(e).with_context(|| format!("keeping the seed image {}", path.display())),
        }
    }
    if imported.added + imported.known == 0 {
        return Err(none_readable(imported.unreadable.len()));
    }
    Ok(imported)
}
