//! An append-only journal: a header, then framed records `len u32 | crc32 u32 | bincode`.
//!
//! Appending a record and fsyncing is O(1) disk work however many records came before. A process
//! killed mid-append leaves at most a torn last record, which was never acknowledged: readers stop
//! before it, and the writer, on reopening, backs the damaged file up and cuts the torn tail off.
//!
//! Damage inside the file (a flipped bit, a zeroed or missing range) costs the records it hits
//! and no others: a reader skips a damaged record by its length when the frame after it is
//! intact, and otherwise resynchronises on the next intact frame (as LevelDB's log reader skips a
//! damaged block and reads on). The writer keeps a copy of the damaged file and rewrites the
//! journal without the damaged bytes, so the file it appends to is whole again.
//!
//! Every record of a file is in the format version of its header. Readers decode older versions
//! through [`JournalRecord`]; the writer, which appends in the current version only, first
//! rewrites a journal of an older version in the current one (keeping a copy of the original), so
//! a file never mixes versions.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};

use crate::codec::{self, DecodeError, FileError, FileKind, HEADER_LEN, Header};

const FRAME_LEN: usize = 8;
/// No single record is anywhere near this large; a bigger length means corruption.
const MAX_RECORD_LEN: u32 = 1 << 20;

/// What a read of a journal found.
#[derive(Debug)]
pub struct JournalContents<T> {
    /// The file's header.
    pub header: Header,
    /// Every intact record, in order.
    pub records: Vec<T>,
    /// Damaged ranges inside the file, each followed by an intact record, in order. Their records
    /// are lost; the records after them are in `records`.
    pub damaged: Vec<Damage>,
    /// Bytes after the last intact record (a torn or corrupt tail), 0 when clean.
    pub damaged_tail: u64,
    /// Offset just after the last intact record.
    pub good_len: u64,
}

/// A damaged range of a journal: bytes that hold no intact record, between two that are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Where the range starts (the offset of the first frame that did not check out).
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
}

impl<T> JournalContents<T> {
    /// Bytes in damaged ranges and in the damaged tail together.
    pub fn damaged_bytes(&self) -> u64 {
        self.damaged.iter().map(|d| d.len).sum::<u64>() + self.damaged_tail
    }
}

/// A type stored in a journal: how a record written at each format version decodes.
///
/// bincode is not self-describing: a record's bytes mean something only to the shape that wrote
/// them. A type whose shape changed between format versions decodes the older shapes itself (and
/// converts them); a type with one shape at every version keeps the default.
pub trait JournalRecord: Serialize + DeserializeOwned {
    /// Decodes one record written at format `version` (never newer than
    /// [`codec::FORMAT_VERSION`]: the header check refuses those files first).
    fn decode_record(version: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let _ = version;
        codec::decode_value(payload)
    }
}

/// The intact record framed at `pos`, and where its frame ends; None when the frame is torn, its
/// CRC fails or its payload does not decode.
fn record_at<T: JournalRecord>(bytes: &[u8], pos: usize, version: u16) -> Option<(T, usize)> {
    let frame = bytes.get(pos..pos + FRAME_LEN)?;
    let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD_LEN {
        return None;
    }
    let end = pos + FRAME_LEN + len as usize;
    let payload = bytes.get(pos + FRAME_LEN..end)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    T::decode_record(version, payload).ok().map(|record| (record, end))
}

/// Where reading resumes after the damaged frame at `pos`: just after it when its length field
/// points at an intact frame (only its payload was hit), otherwise the next offset where an
/// intact frame starts (its length was hit, or a range was cut or overwritten). None when no
/// intact frame follows: the rest is a damaged tail.
fn resume_after<T: JournalRecord>(bytes: &[u8], pos: usize, version: u16) -> Option<usize> {
    let declared = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"));
    let by_length = pos.checked_add(FRAME_LEN + declared as usize).filter(|_| declared <= MAX_RECORD_LEN);
    if let Some(next) = by_length
        && record_at::<T>(bytes, next, version).is_some()
    {
        return Some(next);
    }
    (pos + 1..bytes.len().saturating_sub(FRAME_LEN - 1)).find(|p| record_at::<T>(bytes, *p, version).is_some())
}

/// Decodes journal bytes: every intact record, skipping damaged ones (see the module's doc).
pub fn decode_journal<T: JournalRecord>(bytes: &[u8], kind: FileKind) -> Result<JournalContents<T>, DecodeError> {
    let header = codec::decode_header(bytes, Some(kind))?;
    let mut pos = HEADER_LEN;
    let mut records = Vec::new();
    let mut damaged = Vec::new();
    while pos < bytes.len() {
        if let Some((record, end)) = record_at::<T>(bytes, pos, header.version) {
            records.push(record);
            pos = end;
            continue;
        }
        if bytes.len() - pos < FRAME_LEN {
            break;
        }
        let Some(next) = resume_after::<T>(bytes, pos, header.version) else { break };
        damaged.push(Damage { offset: pos as u64, len: (next - pos) as u64 });
        pos = next;
    }
    Ok(JournalContents { header, records, damaged, damaged_tail: (bytes.len() - pos) as u64, good_len: pos as u64 })
}

/// Reads a journal file.
pub fn read_journal<T: JournalRecord>(path: &Path, kind: FileKind) -> Result<JournalContents<T>, FileError> {
    let bytes = std::fs::read(path).map_err(|e| FileError::io(path, e))?;
    decode_journal(&bytes, kind).map_err(|e| FileError::decode(path, e))
}

/// What [`JournalFollower::read`] found since the last read.
#[derive(Debug)]
pub enum Followed<T> {
    /// Records appended to the file read before, in order (possibly none).
    Appended(Vec<T>),
    /// Every record of the file: it is new (replaced, recreated, or read for the first time) or
    /// was rewritten, so whatever was built from the earlier records is to be rebuilt.
    Whole(Vec<T>),
}

/// Reads a journal as it grows: only the bytes appended since the last read, so a reader that
/// keeps up pays for new records, not for the whole history at every read.
///
/// A journal is only ever appended to in place; any other change (a rewrite that drops damaged
/// bytes, a format upgrade, a reset) goes through a new file, which has a new inode, or leaves
/// a shorter one. Either is read whole. A record still being appended is left for the next read;
/// any other bytes after the last intact record are damage, and the file is read whole, so
/// damage is handled by [`decode_journal`] alone.
#[derive(Debug)]
pub struct JournalFollower {
    path: PathBuf,
    kind: FileKind,
    /// Where the last read ended; None before the first read or after the file went missing.
    read_to: Option<ReadTo>,
}

/// The file a [`JournalFollower`] read, and how far.
#[derive(Debug)]
struct ReadTo {
    inode: u64,
    /// The header's bytes: a file made again under a reused inode still differs here unless it
    /// is the same journal's start (its generation changes with every rewrite).
    header: Vec<u8>,
    version: u16,
    /// The end of the last intact record read.
    offset: u64,
}

impl JournalFollower {
    /// A follower of the journal at `path`, which has read nothing yet.
    pub fn new(path: &Path, kind: FileKind) -> Self {
        Self { path: path.to_owned(), kind, read_to: None }
    }

    /// Forgets where the last read ended: the next read reads the file whole.
    pub fn restart(&mut self) {
        self.read_to = None;
    }

    /// The records added since the last read, or the whole journal when it cannot be followed.
    /// A missing file is an error that [`FileError::is_not_found`] recognises.
    pub fn read<T: JournalRecord>(&mut self) -> Result<Followed<T>, FileError> {
        use std::io::Read;
        let io = |e| FileError::io(&self.path, e);
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) => {
                self.read_to = None;
                return Err(io(e));
            }
        };
        let meta = file.metadata().map_err(io)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        if let Some(read_to) = self.read_to.take_if(|r| r.inode == inode && meta.len() >= r.offset) {
            let mut header = vec![0; HEADER_LEN];
            file.read_exact(&mut header).map_err(io)?;
            if header == read_to.header {
                file.seek(SeekFrom::Start(read_to.offset)).map_err(io)?;
                let mut tail = Vec::with_capacity((meta.len() - read_to.offset) as usize);
                file.read_to_end(&mut tail).map_err(io)?;
                let mut pos = 0;
                let mut records = Vec::new();
                while let Some((record, end)) = record_at::<T>(&tail, pos, read_to.version) {
                    records.push(record);
                    pos = end;
                }
                // What follows the last intact record is nothing, or the start of a record still
                // being appended (its frame or payload runs past the end of the file).
                let rest = &tail[pos..];
                let in_progress = rest.len() < FRAME_LEN || {
                    let declared = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
                    declared <= MAX_RECORD_LEN && FRAME_LEN + declared as usize > rest.len()
                };
                if in_progress {
                    self.read_to = Some(ReadTo { offset: read_to.offset + pos as u64, ..read_to });
                    return Ok(Followed::Appended(records));
                }
            }
        }
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes).map_err(io)?;
        let contents = decode_journal::<T>(&bytes, self.kind).map_err(|e| FileError::decode(&self.path, e))?;
        let header = bytes[..HEADER_LEN].to_vec();
        self.read_to = Some(ReadTo { inode, header, version: contents.header.version, offset: contents.good_len });
        Ok(Followed::Whole(contents.records))
    }
}

/// Frames one record for appending (always in the current format version).
pub fn frame<T: Serialize>(record: &T) -> Vec<u8> {
    let payload = codec::encode_value(record);
    let mut out = Vec::with_capacity(FRAME_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The single writer of a journal file.
#[derive(Debug)]
pub struct JournalWriter {
    file: File,
    path: PathBuf,
    len: u64,
}

/// What opening a journal for writing found and did.
#[derive(Debug)]
pub struct Opened<T> {
    /// The writer, positioned after the last intact record.
    pub writer: JournalWriter,
    /// Every intact record.
    pub records: Vec<T>,
    /// Where the file was copied before anything in it was changed: before damaged ranges or a
    /// torn tail were removed, or before an older format version was rewritten in the current one.
    pub backup: Option<PathBuf>,
    /// The format version the file had when it was older than the current one (and was rewritten).
    pub upgraded_from: Option<u16>,
    /// The damaged ranges inside the file that were skipped (their records are lost; the copy in
    /// `backup` keeps their bytes).
    pub damaged: Vec<Damage>,
    /// Bytes of the torn or corrupt tail that was cut off.
    pub damaged_tail: u64,
}

impl JournalWriter {
    /// Opens (creating if missing) a journal; returns its records. A damaged file is copied to a
    /// backup file first, so nothing is ever destroyed: a torn tail is then cut off, and damaged
    /// ranges inside the file are removed by rewriting it (atomically) with every intact record.
    /// A journal of an older format version is copied aside, then rewritten in the current one,
    /// since appends are always in the current version and a file must not mix them.
    pub fn open<T: JournalRecord>(path: &Path, kind: FileKind) -> Result<Opened<T>, FileError> {
        let io = |e| FileError::io(path, e);
        if !path.exists() {
            let header = Header { version: codec::FORMAT_VERSION, kind, generation: 1, payload_len: 0, payload_crc: 0 };
            crate::atomic::write_atomic(path, &codec::encode_header(&header))?;
        }
        let contents = read_journal::<T>(path, kind)?;
        let old_version = contents.header.version;
        let upgrade = old_version < codec::FORMAT_VERSION;
        let damaged = contents.damaged_tail > 0 || !contents.damaged.is_empty();
        let mut backup = None;
        if damaged || upgrade {
            let why = if upgrade { format!("v{old_version}") } else { "damaged".to_owned() };
            let target = path.with_extension(format!("{why}-{}", crate::now_ms()));
            std::fs::copy(path, &target).map_err(io)?;
            backup = Some(target);
        }
        if damaged {
            tracing::warn!(
                path = %path.display(), backup = %backup.as_ref().expect("copied above").display(),
                damaged_ranges = contents.damaged.len(), damaged_bytes = contents.damaged_bytes(), records_kept = contents.records.len(),
                "journal had damaged bytes; kept a copy of the file, then removed them (the intact records before and after are kept)"
            );
        }
        let mut good_len = contents.good_len;
        if upgrade || !contents.damaged.is_empty() {
            let header =
                Header { version: codec::FORMAT_VERSION, kind, generation: contents.header.generation + 1, payload_len: 0, payload_crc: 0 };
            let mut bytes = codec::encode_header(&header).to_vec();
            for record in &contents.records {
                bytes.extend_from_slice(&frame(record));
            }
            crate::atomic::write_atomic(path, &bytes)?;
            good_len = bytes.len() as u64;
            if upgrade {
                tracing::info!(
                    path = %path.display(), backup = %backup.as_ref().expect("copied above").display(), records = contents.records.len(),
                    "journal of format version {old_version} rewritten in version {}; the original is kept", codec::FORMAT_VERSION
                );
            }
        }
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
        if good_len < std::fs::metadata(path).map_err(io)?.len() {
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let mut writer = JournalWriter { file, path: path.to_owned(), len: good_len };
        writer.file.seek(SeekFrom::Start(writer.len)).map_err(io)?;
        Ok(Opened {
            writer,
            records: contents.records,
            backup,
            upgraded_from: upgrade.then_some(old_version),
            damaged: contents.damaged,
            damaged_tail: contents.damaged_tail,
        })
    }

    /// Appends already-framed records and makes them durable. On failure the file is cut back to
    /// where it was, so a half-written batch never lingers.
    pub fn append_framed(&mut self, framed: &[u8]) -> Result<(), FileError> {
        let result = self.file.write_all(framed).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += framed.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                let _ = self.file.seek(SeekFrom::Start(self.len));
                Err(FileError::io(&self.path, e))
            }
        }
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the journal holds only its header.
    pub fn is_empty(&self) -> bool {
        self.len <= HEADER_LEN as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl JournalRecord for u64 {}
    impl JournalRecord for (u64, String) {}

    fn appended(followed: Followed<u64>) -> Vec<u64> {
        match followed {
            Followed::Appended(records) => records,
            Followed::Whole(records) => panic!("read whole ({records:?}), expected only what was appended"),
        }
    }

    fn whole(followed: Followed<u64>) -> Vec<u64> {
        match followed {
            Followed::Whole(records) => records,
            Followed::Appended(records) => panic!("read only {records:?}, expected the whole journal"),
        }
    }

    #[test]
    fn a_follower_reads_only_what_was_appended_and_waits_for_a_record_being_written() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("j");
        let mut follower = JournalFollower::new(&path, FileKind::Annotations);
        assert!(follower.read::<u64>().unwrap_err().is_not_found());
        let mut w = JournalWriter::open::<u64>(&path, FileKind::Annotations).unwrap().writer;
        w.append_framed(&frame(&1u64)).unwrap();
        assert_eq!(whole(follower.read().unwrap()), vec![1]);
        assert_eq!(appended(follower.read().unwrap()), Vec::<u64>::new());
        w.append_framed(&[frame(&2u64), frame(&3u64)].concat()).unwrap();
        assert_eq!(appended(follower.read().unwrap()), vec![2, 3]);
        // Half of a record's frame, then the rest, as a reader racing the writer sees them.
        let fourth = frame(&4u64);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&fourth[..5]).unwrap();
        assert_eq!(appended(follower.read().unwrap()), Vec::<u64>::new());
        file.write_all(&fourth[5..]).unwrap();
        assert_eq!(appended(follower.read().unwrap()), vec![4]);
    }

    #[test]
    fn a_follower_reads_a_replaced_or_damaged_journal_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("j");
        let mut w = JournalWriter::open::<u64>(&path, FileKind::Annotations).unwrap().writer;
        w.append_framed(&[frame(&1u64), frame(&2u64)].concat()).unwrap();
        let mut follower = JournalFollower::new(&path, FileKind::Annotations);
        assert_eq!(whole(follower.read().unwrap()), vec![1, 2]);
        // Damage after what was read: a whole frame whose payload does not match its CRC.
        let mut bad = frame(&3u64);
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        w.append_framed(&[bad, frame(&4u64)].concat()).unwrap();
        assert_eq!(whole(follower.read().unwrap()), vec![1, 2, 4]);
        // The writer reopening rewrites the file without the damage (a new file by rename).
        drop(w);
        let mut w = JournalWriter::open::<u64>(&path, FileKind::Annotations).unwrap().writer;
        assert_eq!(whole(follower.read().unwrap()), vec![1, 2, 4]);
        w.append_framed(&frame(&5u64)).unwrap();
        assert_eq!(appended(follower.read().unwrap()), vec![5]);
        // Removed and started again (a reset): read whole, not as an append.
        drop(w);
        std::fs::remove_file(&path).unwrap();
        assert!(follower.read::<u64>().unwrap_err().is_not_found());
        let mut w = JournalWriter::open::<u64>(&path, FileKind::Annotations).unwrap().writer;
        w.append_framed(&frame(&6u64)).unwrap();
        assert_eq!(whole(follower.read().unwrap()), vec![6]);
    }

    #[test]
    fn torn_tail_is_backed_up_and_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("j");
        let mut w = JournalWriter::open::<u64>(&path, FileKind::Annotations).unwrap().writer;
        for i in 0..10u64 {
            w.append_framed(&frame(&i)).unwrap();
        }
        drop(w);
        // Simulate a writer killed mid-append: half a record at the end.
        let torn = frame(&99u64);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() - 1]).unwrap();
        drop(f);
        let c = read_journal::<u64>(&path, FileKind::Annotations).unwrap();
        assert_eq!(c.records, (0..10).collect::<Vec<_>>());
        assert_eq!(c.damaged_tail, torn.len() as u64 - 1);
        let opened = JournalWriter::open::<u64>(&path, FileKind::Annotations).unwrap();
        assert_eq!(opened.records.len(), 10);
        let backup = opened.backup.unwrap();
        assert_eq!(std::fs::metadata(&backup).unwrap().len(), c.good_len + c.damaged_tail);
        let mut w = opened.writer;
        w.append_framed(&frame(&10u64)).unwrap();
        let c = read_journal::<u64>(&path, FileKind::Annotations).unwrap();
        assert_eq!(c.records, (0..11).collect::<Vec<_>>());
        assert_eq!(c.damaged_tail, 0);
    }

    proptest::proptest! {
        #[test]
        fn no_byte_string_panics(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let header = Header { version: 1, kind: FileKind::Annotations, generation: 1, payload_len: 0, payload_crc: 0 };
            let mut bytes = codec::encode_header(&header).to_vec();
            bytes.extend_from_slice(&tail);
            let _ = decode_journal::<(u64, String)>(&bytes, FileKind::Annotations);
            let _ = decode_journal::<u64>(&tail, FileKind::Annotations);
        }
    }
}
