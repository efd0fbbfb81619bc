//! The dataset manifest: every image under DATADIR, each with a stable integer id.
//!
//! Ids are indices into `paths` and never change: a rescan keeps every known path at its id and
//! appends new images after them, so annotations and predictions stay valid as a dataset grows.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{self, FileError, FileKind};

/// File extensions (compared case-insensitively) that count as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// Every image of a dataset, by id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Absolute path of the dataset folder when it was scanned.
    pub datadir: String,
    /// Relative path of each image ('/'-separated); the index is the image's id.
    pub paths: PathList,
    /// When the last scan finished (ms since the epoch).
    pub scanned_ms: u64,
}

/// Why a dataset folder could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The folder does not exist.
    #[error("dataset folder {0} does not exist")]
    Missing(PathBuf),
    /// The path is not a folder.
    #[error("dataset path {0} is not a folder")]
    NotADirectory(PathBuf),
    /// No image files at all.
    #[error("dataset folder {path} holds no images ({other_files} other files; looked for {exts})", exts = IMAGE_EXTENSIONS.join(", "))]
    Empty {
        /// The folder.
        path: PathBuf,
        /// Files that were not images.
        other_files: u64,
    },
    /// The folder's image paths are too long together to hold.
    #[error("dataset folder {path}: {source}")]
    TooManyPaths {
        /// The folder.
        path: PathBuf,
        /// How many paths it had got to.
        source: TooManyPaths,
    },
    /// Walking the folder failed.
    #[error("reading dataset folder {path}: {message}")]
    Walk {
        /// Where.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The relative paths of a dataset's images, packed into one string: a million `String`s cost
/// about 30 bytes each beyond their text (the header and the allocation), in every process that
/// holds the manifest; packed, 4. Stored in the manifest file as a list of strings.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PathList {
    /// Every path, one after the other.
    text: String,
    /// Where each path ends in `text`.
    ends: Vec<u32>,
}

/// Most bytes of path text a [`PathList`] holds (its offsets are 32-bit): about 80 million
/// images of 50-byte names.
pub const MAX_PATH_TEXT: usize = u32::MAX as usize;

impl PathList {
    /// Number of paths.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Path `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..end])
    }

    /// The paths in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator + '_ {
        (0..self.len()).map(|i| &self[i])
    }

    /// Appends `path`; an error once the paths would exceed [`MAX_PATH_TEXT`] bytes.
    pub fn push(&mut self, path: &str) -> Result<(), TooManyPaths> {
        let end = self.text.len() + path.len();
        let end = u32::try_from(end).map_err(|_| TooManyPaths { paths: self.len() + 1 })?;
        self.text.push_str(path);
        self.ends.push(end);
        Ok(())
    }

    /// The paths of `paths`, in order.
    pub fn of<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> Result<Self, TooManyPaths> {
        let mut list = Self::default();
        for p in paths {
            list.push(p.as_ref())?;
        }
        list.text.shrink_to_fit();
        list.ends.shrink_to_fit();
        Ok(list)
    }
}

/// A dataset whose relative paths add up to more than [`MAX_PATH_TEXT`] bytes.
#[derive(Debug, thiserror::Error)]
#[error("{paths} image paths take more than {MAX_PATH_TEXT} bytes together: split the folder into several run directories")]
pub struct TooManyPaths {
    /// Paths at the point it failed.
    pub paths: usize,
}

/// Collects paths; panics past [`MAX_PATH_TEXT`] bytes (for lists made in memory; a scan or a
/// file read gets [`TooManyPaths`] instead).
impl<S: AsRef<str>> FromIterator<S> for PathList {
    fn from_iter<I: IntoIterator<Item = S>>(paths: I) -> Self {
        Self::of(paths).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl std::ops::Index<usize> for PathList {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        self.get(i).unwrap_or_else(|| panic!("path {i} of {}", self.len()))
    }
}

impl std::fmt::Debug for PathList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for PathList {
    /// As a list of strings, as a `Vec<String>` was: manifest files stay what they were.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PathList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Paths;
        impl<'de> serde::de::Visitor<'de> for Paths {
            type Value = PathList;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of image paths")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<PathList, A::Error> {
                let mut list = PathList::default();
                // Not the length the file claims: a damaged one could claim billions.
                list.ends.reserve(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(path) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    list.push(&path).map_err(serde::de::Error::custom)?;
                }
                list.text.shrink_to_fit();
                list.ends.shrink_to_fit();
                Ok(list)
            }
        }
        deserializer.deserialize_seq(Paths)
    }
}

/// True when a file name has one of the image extensions, in any letter case.
pub fn is_image_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, ext)| IMAGE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// Lists the images under `datadir`, recursively, sorted. Symlinks are not followed, so a link
/// pointing outside the dataset never enters the manifest.
pub fn list_images(datadir: &Path) -> Result<Vec<String>, ScanError> {
    if !datadir.exists() {
        return Err(ScanError::Missing(datadir.to_owned()));
    }
    if !datadir.is_dir() {
        return Err(ScanError::NotADirectory(datadir.to_owned()));
    }
    let progress = indicatif::ProgressBar::new_spinner().with_message(format!("scanning {}", datadir.display()));
    let mut paths = Vec::new();
    let mut other_files = 0u64;
    for entry in walkdir::WalkDir::new(datadir).follow_links(false) {
        let entry = entry.map_err(|e| ScanError::Walk { path: datadir.to_owned(), message: e.to_string() })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(datadir) else {
            continue;
        };
        let Some(rel) = rel.to_str() else {
            tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if is_image_name(rel) {
            paths.push(rel.replace(std::path::MAIN_SEPARATOR, "/"));
            if paths.len() % 10_000 == 0 {
                progress.set_message(format!("scanning {}: {} images", datadir.display(), paths.len()));
                progress.tick();
            }
        } else {
            other_files += 1;
        }
    }
    progress.finish_and_clear();
    if paths.is_empty() {
        return Err(ScanError::Empty { path: datadir.to_owned(), other_files });
    }
    paths.sort_unstable();
    Ok(paths)
}

impl Manifest {
    /// Scans `datadir`, keeping the ids of `previous` (if any) and appending new images.
    pub fn scan(datadir: &Path, previous: Option<Manifest>) -> Result<(Manifest, usize), ScanError> {
        let found = list_images(datadir)?;
        let absolute = std::path::absolute(datadir).unwrap_or_else(|_| datadir.to_owned());
        let mut paths = previous.map(|m| m.paths).unwrap_or_default();
        let known: HashSet<&str> = paths.iter().collect();
        let new: Vec<String> = found.into_iter().filter(|p| !known.contains(p.as_str())).collect();
        let added = new.len();
        for path in &new {
            paths.push(path).map_err(|source| ScanError::TooManyPaths { path: datadir.to_owned(), source })?;
        }
        Ok((Manifest { datadir: absolute.to_string_lossy().into_owned(), paths, scanned_ms: crate::now_ms() }, added))
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The relative path of image `id`, if it exists.
    pub fn path(&self, id: u32) -> Option<&str> {
        self.paths.get(id as usize)
    }

    /// Where image `id` lives on disk, under `datadir` (which may differ from the scanned one on
    /// another machine sharing the run directory).
    pub fn file_path(&self, datadir: &Path, id: u32) -> Option<PathBuf> {
        self.path(id).map(|rel| datadir.join(rel))
    }
}

impl codec::RunDirFile for Manifest {
    const KIND: FileKind = FileKind::Manifest;

    /// Atomically writes a manifest file, after checking that it reads back: image ids cannot be
    /// regenerated, so an encoding bug must stop the first start, not a later one.
    fn save(&self, path: &Path, generation: u64) -> Result<(), FileError> {
        codec::write_file_verified(path, FileKind::Manifest, generation, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_is_recursive_case_insensitive_and_keeps_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        for name in ["b.PNG", "a.jpg", "sub/c.JpEg", "sub/deeper/d.tiff", "notes.txt", "sub/e.webp"] {
            std::fs::write(d.join(name), b"x").unwrap();
        }
        let (m, added) = Manifest::scan(d, None).unwrap();
        assert_eq!(added, 5);
        assert_eq!(m.paths.iter().collect::<Vec<_>>(), ["a.jpg", "b.PNG", "sub/c.JpEg", "sub/deeper/d.tiff", "sub/e.webp"]);
        std::fs::write(d.join("0-first.png"), b"x").unwrap();
        let (m2, added) = Manifest::scan(d, Some(m.clone())).unwrap();
        assert_eq!(added, 1);
        assert!(m2.paths.iter().take(5).eq(m.paths.iter()));
        assert_eq!(&m2.paths[5], "0-first.png");
    }

    #[test]
    fn packed_paths_read_and_write_as_a_list_of_strings() {
        // A manifest written when the paths were a Vec<String> reads back the same, and is
        // written again byte for byte: run directories stay valid.
        #[derive(Serialize)]
        struct Listed {
            datadir: String,
            paths: Vec<String>,
            scanned_ms: u64,
        }
        let names: Vec<String> = ["a.jpg", "", "sub/ä/c.png", "d.tiff"].map(String::from).to_vec();
        let listed = Listed { datadir: "/data".into(), paths: names.clone(), scanned_ms: 7 };
        let bytes = codec::encode_value(&listed);
        let m: Manifest = codec::decode_value(&bytes).unwrap();
        assert_eq!(m.paths.len(), 4);
        assert!(m.paths.iter().eq(names.iter().map(String::as_str)));
        assert_eq!((m.path(2), m.path(1), m.path(4)), (Some("sub/ä/c.png"), Some(""), None));
        assert_eq!(codec::encode_value(&m), bytes);
        assert_eq!(PathList::of(&names).unwrap(), m.paths);
        assert!(PathList::default().is_empty() && PathList::default().get(0).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_dataset_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(outside.join("secret.png"), b"x").unwrap();
        std::fs::write(data.join("ok.png"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.png"), data.join("link.png")).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("linkdir")).unwrap();
        assert_eq!(list_images(&data).unwrap(), ["ok.png"]);
    }

    #[test]
    fn missing_and_empty_folders_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let err = list_images(&tmp.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        std::fs::write(tmp.path().join("readme.txt"), b"x").unwrap();
        let err = list_images(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("holds no images (1 other files"), "{err}");
    }
}
