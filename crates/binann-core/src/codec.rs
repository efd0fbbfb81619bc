//! The header every run-directory file starts with, and encoding of the payload behind it.
//!
//! Layout (little-endian, 40 bytes):
//! `magic[8] | version u16 | kind u16 | reserved u32 | generation u64 | payload_len u64 |
//!  payload_crc32 u32 | header_crc32 u32`.
//! A journal (append-only file) has `payload_len == 0` and framed records after the header.
//! This module is the only place that knows the payload is bincode 2 (standard config).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};

/// First eight bytes of every binann run-directory file.
pub const MAGIC: [u8; 8] = *b"BINANN\0\x1a";
/// The format version this build writes and the newest it reads.
///
/// - 1: the first format.
/// - 2: annotation journal records carry the annotator's name. Nothing else changed, so every
///   other kind of file decodes the same at both versions; a version-1 journal is read as is and
///   upgraded by its writer when it is next opened (see [`crate::journal::JournalRecord`]).
/// - 3: journal records say whether the label was for an audit pick (see [`crate::estimate`]).
///   Again only the journal changed, and older journals are read and upgraded the same way.
/// - 4: predictions hold logits, not probabilities (see [`crate::predictions::Predictions`]). An
///   older predictions file is refused ([`DecodeError::OlderVersion`]) until its inferrer
///   rewrites it; every other kind decodes as before.
pub const FORMAT_VERSION: u16 = 4;
/// Size of [`Header`] on disk.
pub const HEADER_LEN: usize = 40;

/// What a run-directory file holds; stored in its header so a reader rejects the wrong file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// The dataset manifest (every image, with its id).
    Manifest = 1,
    /// The append-only annotation journal.
    Annotations = 2,
    /// The order in which the server hands out images.
    Ranking = 3,
    /// The inferrer's probabilities.
    Predictions = 4,
    /// A chunk of cached backbone embeddings.
    Embeddings = 5,
    /// The sketches of the embedded images, for nearest-neighbour search.
    Sketches = 6,
    /// How many records the annotation journal has held (to tell a journal cut short).
    JournalMark = 7,
}

impl FileKind {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Manifest,
            2 => Self::Annotations,
            3 => Self::Ranking,
            4 => Self::Predictions,
            5 => Self::Embeddings,
            6 => Self::Sketches,
            7 => Self::JournalMark,
            _ => return None,
        })
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Manifest => "manifest",
            Self::Annotations => "annotations",
            Self::Ranking => "ranking",
            Self::Predictions => "predictions",
            Self::Embeddings => "embeddings",
            Self::Sketches => "sketches",
            Self::JournalMark => "journal mark",
        };
        f.write_str(name)
    }
}

/// The fixed header in front of every run-directory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    /// Format version the file was written with.
    pub version: u16,
    /// What the file holds.
    pub kind: FileKind,
    /// Incremented by the writer on each rewrite, so readers can tell files apart.
    pub generation: u64,
    /// Bytes of payload after the header (0 for a journal).
    pub payload_len: u64,
    /// CRC-32 of the payload (0 for a journal).
    pub payload_crc: u32,
}

/// What is wrong with a file, independent of where it lives.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// Not a binann file at all.
    #[error("not a binann file (bad magic bytes)")]
    BadMagic,
    /// The header's own checksum failed.
    #[error("corrupt header (checksum mismatch)")]
    HeaderChecksum,
    /// Written by a newer binann.
    #[error("format version {found} is newer than this binann reads ({FORMAT_VERSION}); upgrade binann")]
    NewerVersion {
        /// Version in the file.
        found: u16,
    },
    /// Written by an older binann, in a layout whose values mean something else now.
    #[error(
        "format version {found} is older than this binann reads for this kind of file ({oldest}); the process that writes it replaces it"
    )]
    OlderVersion {
        /// Version in the file.
        found: u16,
        /// The oldest version read.
        oldest: u16,
    },
    /// An unknown kind number.
    #[error("unknown file kind {0}")]
    UnknownKind(u16),
    /// A binann file, but another kind.
    #[error("this is a {found} file, expected a {expected} file")]
    WrongKind {
        /// Kind wanted.
        expected: FileKind,
        /// Kind found.
        found: FileKind,
    },
    /// Payload shorter than the header promises.
    #[error("truncated: header promises {expected} payload bytes, {found} present")]
    Truncated {
        /// Bytes promised.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// Payload checksum mismatch.
    #[error("corrupt payload (checksum mismatch)")]
    PayloadChecksum,
    /// bincode could not decode the payload.
    #[error("payload does not decode: {0}")]
    Payload(String),
}

/// A file-level error: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file's bytes are not what they should be.
    #[error("{path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: DecodeError,
    },
}

impl FileError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
    /// Wraps a decode error with the path it happened on.
    pub fn decode(path: &Path, source: DecodeError) -> Self {
        Self::Decode { path: path.to_owned(), source }
    }
    /// True when the file simply does not exist (yet).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a header to its 40 bytes.
pub fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&h.version.to_le_bytes());
    b[10..12].copy_from_slice(&(h.kind as u16).to_le_bytes());
    // 12..16 reserved, zero
    b[16..24].copy_from_slice(&h.generation.to_le_bytes());
    b[24..32].copy_from_slice(&h.payload_len.to_le_bytes());
    b[32..36].copy_from_slice(&h.payload_crc.to_le_bytes());
    let crc = crc32fast::hash(&b[0..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes and validates a header; `expected` rejects files of another kind.
pub fn decode_header(bytes: &[u8], expected: Option<FileKind>) -> Result<Header, DecodeError> {
    if bytes.len() < HEADER_LEN {
        if bytes.len() >= 8 && bytes[0..8] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    if bytes[0..8] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    if crc32fast::hash(&bytes[0..36]) != u32_at(36) {
        return Err(DecodeError::HeaderChecksum);
    }
    let version = u16_at(8);
    if version > FORMAT_VERSION {
        return Err(DecodeError::NewerVersion { found: version });
    }
    let kind = FileKind::from_u16(u16_at(10)).ok_or(DecodeError::UnknownKind(u16_at(10)))?;
    if let Some(expected) = expected
        && expected != kind
    {
        return Err(DecodeError::WrongKind { expected, found: kind });
    }
    Ok(Header { version, kind, generation: u64_at(16), payload_len: u64_at(24), payload_crc: u32_at(32) })
}

/// Encodes a value with bincode (no header): used for journal records.
pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("bincode encoding of in-memory values cannot fail")
}

/// The most bytes bincode's serde decoder claims against its limit for each byte it reads.
///
/// bincode counts claims in memory terms: a `u128` claims 16 bytes, a `u64` or a length prefix 8,
/// a `u32` or an enum tag 4, even when its varint took a single byte; a string claims exactly its
/// bytes. Every claim comes with at least one byte read, so a value that decodes claims at most
/// this many times the bytes it was encoded in, whatever its shape (many short strings, small
/// integers, empty fields). Sizing the limit from the payload's bytes alone (the old rule, limit
/// between 1 and 4 times the bytes) refused ordinary manifests of a few thousand short names.
pub const MAX_CLAIM_PER_BYTE: usize = 16;

/// Decodes a bincode value (no header), refusing trailing bytes.
///
/// A corrupt length prefix must not make bincode allocate gigabytes up front (`vec![0; len]` for
/// a string aborts the process rather than failing), so the decoder may claim at most
/// [`MAX_CLAIM_PER_BYTE`] times the bytes present (the limit is a type-level constant, hence the
/// ladder: the first rung at or above that bound, so the limit is 16 to 64 times the bytes). No
/// value binann encodes can exceed it (see [`MAX_CLAIM_PER_BYTE`]); a forged prefix can make it
/// allocate at most that much, and every file's payload is checksummed before it gets here.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    fn decode<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, config().with_limit::<LIMIT>())
    }
    macro_rules! within {
        ($($limit:literal),*) => {
            match bytes.len().saturating_mul(MAX_CLAIM_PER_BYTE) {
                $(bound if bound <= $limit => decode::<T, $limit>(bytes),)*
                _ => decode::<T, { usize::MAX }>(bytes),
            }
        };
    }
    let decoded = within!(
        0x1_0000,
        0x4_0000,
        0x10_0000,
        0x40_0000,
        0x100_0000,
        0x400_0000,
        0x1000_0000,
        0x4000_0000,
        0x1_0000_0000,
        0x4_0000_0000,
        0x10_0000_0000,
        0x40_0000_0000,
        0x100_0000_0000,
        0x400_0000_0000
    );
    let (value, used) = decoded.map_err(|e| DecodeError::Payload(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::Payload(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

/// Encodes a whole file: header plus bincode payload.
pub fn encode_file<T: Serialize>(kind: FileKind, generation: u64, value: &T) -> Vec<u8> {
    let payload = encode_value(value);
    let header =
        Header { version: FORMAT_VERSION, kind, generation, payload_len: payload.len() as u64, payload_crc: crc32fast::hash(&payload) };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&encode_header(&header));
    out.extend_from_slice(&payload);
    out
}

/// Decodes a whole file of the expected kind, checking length and checksum.
pub fn decode_file<T: DeserializeOwned>(bytes: &[u8], kind: FileKind) -> Result<(Header, T), DecodeError> {
    let header = decode_header(bytes, Some(kind))?;
    let payload = &bytes[HEADER_LEN..];
    if (payload.len() as u64) < header.payload_len {
        return Err(DecodeError::Truncated { expected: header.payload_len, found: payload.len() as u64 });
    }
    if (payload.len() as u64) > header.payload_len {
        return Err(DecodeError::Payload(format!("{} bytes after the payload", payload.len() as u64 - header.payload_len)));
    }
    if crc32fast::hash(payload) != header.payload_crc {
        return Err(DecodeError::PayloadChecksum);
    }
    Ok((header, decode_value(payload)?))
}

/// A run-directory file of one kind: a header naming [`Self::KIND`], then the value in bincode.
/// Implementing it (the kind, and what makes a decoded value whole) is all a new file kind needs
/// to be loaded, checked and saved like every other; the journal, appended record by record, is
/// the one file that is not one.
pub trait RunDirFile: Serialize + DeserializeOwned {
    /// The kind its header names; a file of another kind is refused.
    const KIND: FileKind;

    /// The oldest format version whose values mean what this build's do; an older file is
    /// refused with [`DecodeError::OlderVersion`].
    const OLDEST_VERSION: u16 = 1;

    /// What a decoded value must satisfy beyond decoding (sizes that must agree). The checksum
    /// only proves the file is the one written; a value that fails this is refused with the
    /// message, never used.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Refuses a file written before [`Self::OLDEST_VERSION`].
    fn check_version(header: &Header) -> Result<(), DecodeError> {
        if header.version < Self::OLDEST_VERSION {
            return Err(DecodeError::OlderVersion { found: header.version, oldest: Self::OLDEST_VERSION });
        }
        Ok(())
    }

    /// Loads and checks the file: its generation and its value.
    fn load(path: &Path) -> Result<(u64, Self), FileError> {
        let (header, value): (Header, Self) = read_file(path, Self::KIND)?;
        Self::check_version(&header).map_err(|e| FileError::decode(path, e))?;
        value.validate().map_err(|message| FileError::decode(path, DecodeError::Payload(message)))?;
        Ok((header.generation, value))
    }

    /// Writes the file atomically, as `generation`.
    fn save(&self, path: &Path, generation: u64) -> Result<(), FileError> {
        write_file(path, Self::KIND, generation, self)
    }
}

/// Reads and decodes a whole file.
pub fn read_file<T: DeserializeOwned>(path: &Path, kind: FileKind) -> Result<(Header, T), FileError> {
    let bytes = std::fs::read(path).map_err(|e| FileError::io(path, e))?;
    decode_file(&bytes, kind).map_err(|e| FileError::decode(path, e))
}

/// Encodes and atomically writes a whole file.
pub fn write_file<T: Serialize>(path: &Path, kind: FileKind, generation: u64, value: &T) -> Result<(), FileError> {
    crate::atomic::write_atomic(path, &encode_file(kind, generation, value))
}

/// Like [`write_file`], but first checks that the encoded bytes decode again, so that a file that
/// cannot be regenerated (the manifest: image ids) is refused when written, before anyone labels
/// against it, instead of when it is next read.
pub fn write_file_verified<T: Serialize + DeserializeOwned>(
    path: &Path,
    kind: FileKind,
    generation: u64,
    value: &T,
) -> Result<(), FileError> {
    let bytes = encode_file(kind, generation, value);
    decode_file::<T>(&bytes, kind).map_err(|e| FileError::decode(path, e))?;
    crate::atomic::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let v: Vec<u32> = (0..100).collect();
        let bytes = encode_file(FileKind::Ranking, 7, &v);
        let (h, back): (Header, Vec<u32>) = decode_file(&bytes, FileKind::Ranking).unwrap();
        assert_eq!(h.generation, 7);
        assert_eq!(back, v);
        assert_eq!(
            decode_file::<Vec<u32>>(&bytes, FileKind::Manifest).unwrap_err(),
            DecodeError::WrongKind { expected: FileKind::Manifest, found: FileKind::Ranking }
        );
        assert!(matches!(decode_file::<Vec<u32>>(&bytes[..bytes.len() - 3], FileKind::Ranking), Err(DecodeError::Truncated { .. })));
        assert_eq!(
            decode_file::<Vec<u32>>(b"{\"json\": true}\n...........................", FileKind::Ranking).unwrap_err(),
            DecodeError::BadMagic
        );
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(decode_file::<Vec<u32>>(&flipped, FileKind::Ranking).unwrap_err(), DecodeError::PayloadChecksum);
        let mut newer = bytes.clone();
        newer[8] = 9;
        let crc = crc32fast::hash(&newer[0..36]);
        newer[36..40].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_file::<Vec<u32>>(&newer, FileKind::Ranking).unwrap_err(), DecodeError::NewerVersion { found: 9 });
    }

    #[test]
    fn a_file_that_would_not_read_back_is_never_written() {
        // Serialize and Deserialize disagree (a stand-in for any encoding bug): the write is refused.
        #[derive(Serialize, serde::Deserialize)]
        struct Lopsided {
            #[serde(skip_serializing)]
            #[allow(dead_code)]
            missing: u32,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.bin");
        let err = write_file_verified(&path, FileKind::Manifest, 1, &Lopsided { missing: 1 }).unwrap_err();
        assert!(matches!(err, FileError::Decode { source: DecodeError::Payload(_), .. }), "{err}");
        assert!(!path.exists());
        write_file_verified(&path, FileKind::Ranking, 1, &vec![1u32, 2]).unwrap();
        assert_eq!(read_file::<Vec<u32>>(&path, FileKind::Ranking).unwrap().1, vec![1, 2]);
    }

    proptest::proptest! {
        #[test]
        fn no_byte_string_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode_file::<Vec<u32>>(&bytes, FileKind::Ranking);
            let _ = decode_header(&bytes, None);
        }

        #[test]
        fn no_payload_panics_any_decoder(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            // A valid header with checksummed garbage behind it reaches every bincode decoder.
            for kind in [FileKind::Manifest, FileKind::Ranking, FileKind::Predictions, FileKind::Embeddings] {
                let header = Header { version: FORMAT_VERSION, kind, generation: 1, payload_len: payload.len() as u64, payload_crc: crc32fast::hash(&payload) };
                let mut bytes = encode_header(&header).to_vec();
                bytes.extend_from_slice(&payload);
                let _ = decode_file::<crate::manifest::Manifest>(&bytes, kind);
                let _ = decode_file::<crate::ranking::Ranking>(&bytes, kind);
                let _ = decode_file::<crate::predictions::Predictions>(&bytes, kind);
                let _ = decode_file::<crate::embeddings::EmbeddingChunk>(&bytes, kind);
            }
        }

        #[test]
        fn any_truncation_is_detected(cut in 0usize..400) {
            let v: Vec<u64> = (0..50).collect();
            let bytes = encode_file(FileKind::Predictions, 1, &v);
            let cut = cut.min(bytes.len() - 1);
            proptest::prop_assert!(decode_file::<Vec<u64>>(&bytes[..cut], FileKind::Predictions).is_err());
        }
    }
}
