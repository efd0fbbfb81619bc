//! The annotation journal's real record type ([`Record`]) through its real framing
//! ([`journal::frame`], [`journal::decode_journal`], the file readers), on arbitrary input:
//!
//! - any records round-trip, in memory and through [`JournalWriter`] and a file;
//! - a journal cut anywhere reads as exactly the records wholly before the cut (a torn append);
//! - a flipped bit anywhere loses exactly the record it hit, never another, never a wrong record
//!   (the frame's CRC-32 catches every single-bit error); in a journal of 1,000 labels, any byte
//!   changed or any range cut out or zeroed loses only the records whose own bytes it touched,
//!   and the writer keeps a copy, removes the damage and appends after the rest;
//! - any bytes, behind a header of any format version or none, are an error or records, never a
//!   panic, through the decoder, [`AnnotationState::load`] and [`JournalWriter::open`].
//!
//! (`file_shapes.rs` covers the sizes real folders give; these cover what a disk or a crash can.)

use binann_core::annotations::{AnnotationState, AuditPick, Event, Label, Record};
use binann_core::codec::{self, FileKind, HEADER_LEN, Header};
use binann_core::journal::{self, JournalWriter};
use proptest::prelude::*;

fn label() -> impl Strategy<Value = Label> {
    prop_oneof![Just(Label::Positive), Just(Label::Negative), Just(Label::Skip)]
}

/// Any event. Probabilities are any `f32` but NaN (which no `==` can compare); NaN's round trip is
/// checked by bytes in `file_shapes.rs`.
fn event() -> impl Strategy<Value = Event> {
    let prob = proptest::option::of(any::<f32>().prop_filter("NaN never equals itself", |p| !p.is_nan()));
    prop_oneof![
        (any::<u32>(), label(), prob).prop_map(|(id, label, prob)| Event::Label { id, label, prob }),
        (any::<u32>(), any::<u64>()).prop_map(|(id, of_seq)| Event::Undo { id, of_seq }),
    ]
}

/// Any record: any numbers, any Unicode in the names (empty included), audit draw or not.
fn record() -> impl Strategy<Value = Record> {
    let audit =
        proptest::option::of((any::<u64>(), any::<u64>()).prop_map(|(unlabelled, found_before)| AuditPick { unlabelled, found_before }));
    (any::<u64>(), any::<u64>(), ".{0,12}", ".{0,12}", event(), audit).prop_map(|(seq, time_ms, client, annotator, event, audit)| Record {
        seq,
        time_ms,
        client,
        annotator,
        event,
        audit,
    })
}

fn records() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(record(), 0..12)
}

fn header(version: u16) -> Vec<u8> {
    codec::encode_header(&Header { version, kind: FileKind::Annotations, generation: 1, payload_len: 0, payload_crc: 0 }).to_vec()
}

/// A current-version journal of `records`, and where each record's frame ends.
fn journal_bytes(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = header(codec::FORMAT_VERSION);
    let mut ends = Vec::new();
    for r in records {
        bytes.extend_from_slice(&journal::frame(r));
        ends.push(bytes.len());
    }
    (bytes, ends)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_records_round_trip(records in records()) {
        let (bytes, _) = journal_bytes(&records);
        let read = journal::decode_journal::<Record>(&bytes, FileKind::Annotations).unwrap();
        prop_assert_eq!(read.damaged_tail, 0);
        prop_assert_eq!(read.good_len, bytes.len() as u64);
        prop_assert_eq!(&read.records, &records);

        // The same through the writer and a file, as the server appends them.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("annotations.journal");
        let mut writer = JournalWriter::open::<Record>(&path, FileKind::Annotations).unwrap().writer;
        for r in &records {
            writer.append_framed(&journal::frame(r)).unwrap();
        }
        drop(writer);
        prop_assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len());
        let reopened = JournalWriter::open::<Record>(&path, FileKind::Annotations).unwrap();
        prop_assert!(reopened.backup.is_none(), "a clean journal was taken for a damaged one");
        prop_assert_eq!(&reopened.records, &records);
    }

    #[test]
    fn a_cut_journal_reads_as_the_records_before_the_cut(records in records(), cut in any::<prop::sample::Index>()) {
        let (bytes, ends) = journal_bytes(&records);
        let at = HEADER_LEN + cut.index(bytes.len() - HEADER_LEN + 1);
        let whole = ends.iter().filter(|end| **end <= at).count();
        let read = journal::decode_journal::<Record>(&bytes[..at], FileKind::Annotations).unwrap();
        prop_assert_eq!(&read.records[..], &records[..whole]);
        let good = if whole == 0 { HEADER_LEN } else { ends[whole - 1] };
        prop_assert_eq!(read.good_len, good as u64);
        prop_assert_eq!(read.damaged_tail, (at - good) as u64);

        // The writer keeps a copy, cuts the torn tail off, and appends after the last whole record.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("annotations.journal");
        std::fs::write(&path, &bytes[..at]).unwrap();
        let opened = JournalWriter::open::<Record>(&path, FileKind::Annotations).unwrap();
        prop_assert_eq!(opened.backup.is_some(), at > good);
        prop_assert_eq!(opened.writer.len(), good as u64);
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), good as u64);
    }

    #[test]
    fn a_flipped_bit_loses_the_record_it_hit_and_no_other(records in records().prop_filter("a record to hit", |r| !r.is_empty()), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (mut bytes, ends) = journal_bytes(&records);
        let at = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
        bytes[at] ^= 1 << bit;
        let hit = ends.iter().position(|end| at < *end).expect("the flip is inside a frame");
        let read = journal::decode_journal::<Record>(&bytes, FileKind::Annotations).unwrap();
        let mut want = records.clone();
        want.remove(hit);
        prop_assert_eq!(&read.records, &want, "flip at byte {} of frame {}", at, hit);
        let last = hit == records.len() - 1;
        prop_assert_eq!(read.good_len, if last { if hit == 0 { HEADER_LEN } else { ends[hit - 1] } } else { bytes.len() } as u64);
        prop_assert_eq!(read.damaged.len(), usize::from(!last));
    }

    #[test]
    fn a_flipped_bit_in_the_header_is_refused(records in records(), at in 0..HEADER_LEN, bit in 0u8..8) {
        let (mut bytes, _) = journal_bytes(&records);
        bytes[at] ^= 1 << bit;
        prop_assert!(journal::decode_journal::<Record>(&bytes, FileKind::Annotations).is_err());
    }

    /// Any bytes behind a header of every version a journal can have (older versions decode
    /// through their own record shapes), and any bytes with no header at all.
    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400), version in 1..=codec::FORMAT_VERSION) {
        for bytes in [[header(version), tail.clone()].concat(), tail.clone()] {
            if let Ok(read) = journal::decode_journal::<Record>(&bytes, FileKind::Annotations) {
                prop_assert_eq!(read.good_len + read.damaged_tail, bytes.len() as u64);
            }
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("annotations.journal");
            std::fs::write(&path, &bytes).unwrap();
            let _ = AnnotationState::load(&path);
            let _ = JournalWriter::open::<Record>(&path, FileKind::Annotations);
        }
    }

    /// Frames whose CRC holds but whose payload is arbitrary (a bug in a writer, not a disk):
    /// decoding stops there, and replaying whatever decodes is an error or a state, never a panic.
    #[test]
    fn arbitrary_payloads_in_valid_frames_never_panic(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
        let mut bytes = header(codec::FORMAT_VERSION);
        for p in &payloads {
            bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            bytes.extend_from_slice(p);
        }
        let read = journal::decode_journal::<Record>(&bytes, FileKind::Annotations).unwrap();
        prop_assert!(read.records.len() <= payloads.len());
        let _ = AnnotationState::replay(&read.records);
    }

    /// Replaying any records, in journal order or not, is an error or a state, never a panic.
    #[test]
    fn replaying_any_records_never_panics(records in records(), numbered in any::<bool>()) {
        let mut records = records;
        if numbered {
            // Sequence numbers in order, so that the events themselves are what gets replayed.
            for (i, r) in records.iter_mut().enumerate() {
                r.seq = i as u64;
            }
        }
        if let Ok(state) = AnnotationState::replay(&records) {
            // Seqs rise; a jump is records lost, counted.
            let next = records.last().map_or(0, |r| r.seq + 1);
            prop_assert_eq!(state.next_seq(), next);
            prop_assert_eq!(state.lost_records(), next - records.len() as u64);
        }
    }
}

/// A journal of `n` labels as the server writes them (seq 0, 1, 2...), and where each frame starts
/// and ends.
fn labels_journal(n: usize) -> (Vec<Record>, Vec<u8>, Vec<(usize, usize)>) {
    let records: Vec<Record> = (0..n as u64)
        .map(|seq| Record {
            seq,
            time_ms: 1_700_000_000_000 + seq * 211,
            client: format!("tab-{}", seq % 3),
            annotator: if seq % 2 == 0 { "ana".into() } else { String::new() },
            event: Event::Label {
                id: (seq * 7919 % 100_000) as u32,
                label: if seq % 10 == 0 { Label::Positive } else { Label::Negative },
                prob: Some(0.25),
            },
            audit: None,
        })
        .collect();
    let mut bytes = header(codec::FORMAT_VERSION);
    let mut spans = Vec::new();
    for r in &records {
        let start = bytes.len();
        bytes.extend_from_slice(&journal::frame(r));
        spans.push((start, bytes.len()));
    }
    (records, bytes, spans)
}

/// How a journal's bytes are damaged: one byte changed, a range cut out, or a range zeroed.
#[derive(Debug, Clone)]
enum Harm {
    Change { at: prop::sample::Index, xor: u8 },
    Cut { from: prop::sample::Index, len: usize },
    Zero { from: prop::sample::Index, len: usize },
}

fn harm() -> impl Strategy<Value = Harm> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(at, xor)| Harm::Change { at, xor }),
        (any::<prop::sample::Index>(), 1usize..3_000).prop_map(|(from, len)| Harm::Cut { from, len }),
        (any::<prop::sample::Index>(), 1usize..3_000).prop_map(|(from, len)| Harm::Zero { from, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any damage after the header loses only the records whose own bytes it touched: every
    /// other record is read back, in order, by the reader, by [`AnnotationState::load`] (which
    /// counts the lost ones it can see as gaps) and by the writer, which keeps a copy of the
    /// damaged file, removes the damage and appends after the last record.
    #[test]
    fn damage_loses_only_the_records_it_touched(harm in harm()) {
        let (records, mut bytes, spans) = labels_journal(1_000);
        let body = bytes.len() - HEADER_LEN;
        // The byte range [from, to) of the original file that the damage touched.
        let (from, to) = match &harm {
            Harm::Change { at, xor } => {
                let at = HEADER_LEN + at.index(body);
                bytes[at] ^= xor;
                (at, at + 1)
            }
            Harm::Cut { from, len } => {
                let from = HEADER_LEN + from.index(body);
                let to = (from + len).min(bytes.len());
                bytes.drain(from..to);
                (from, to)
            }
            Harm::Zero { from, len } => {
                let from = HEADER_LEN + from.index(body);
                let to = (from + len).min(bytes.len());
                // Zeroing bytes that are already zero changes nothing: the damage is what changed.
                let changed: Vec<usize> = (from..to).filter(|i| bytes[*i] != 0).collect();
                bytes[from..to].fill(0);
                match (changed.first(), changed.last()) {
                    (Some(first), Some(last)) => (*first, *last + 1),
                    _ => (from, from),
                }
            }
        };
        let intact: Vec<Record> =
            records.iter().zip(&spans).filter(|(_, (start, end))| from == to || *end <= from || *start >= to).map(|(r, _)| r.clone()).collect();
        let read = journal::decode_journal::<Record>(&bytes, FileKind::Annotations).unwrap();
        // Every intact record is read back, and nothing but the original records, in order. (A
        // record the damage touched may still read back whole: a cut between two records whose
        // removed stretch ends where the next record repeats the first's bytes leaves it as it was.)
        let mut read_seqs = read.records.iter().map(|r| r.seq);
        for r in &intact {
            prop_assert!(read_seqs.any(|seq| seq == r.seq), "record {} is intact and was not read back ({:?})", r.seq, harm);
        }
        prop_assert!(read.records.windows(2).all(|w| w[0].seq < w[1].seq));
        for r in &read.records {
            prop_assert_eq!(r, &records[r.seq as usize], "a record read back is not the one written");
        }
        let kept = read.records.clone();

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("annotations.journal");
        std::fs::write(&path, &bytes).unwrap();
        let state = AnnotationState::load(&path).unwrap();
        let last_kept = kept.last().map_or(0, |r| r.seq + 1);
        prop_assert_eq!(state.next_seq(), last_kept);
        prop_assert_eq!(state.lost_records(), last_kept - kept.len() as u64);

        let opened = JournalWriter::open::<Record>(&path, FileKind::Annotations).unwrap();
        prop_assert_eq!(&opened.records, &kept);
        // A cut on record boundaries leaves nothing to see but the gap in the sequence.
        prop_assert_eq!(opened.backup.is_some(), read.damaged_bytes() > 0);
        if let Some(backup) = &opened.backup {
            prop_assert_eq!(std::fs::read(backup).unwrap(), bytes.clone(), "the copy keeps the damaged bytes");
        }
        let mut writer = opened.writer;
        let next = Record { seq: last_kept, ..records[0].clone() };
        writer.append_framed(&journal::frame(&next)).unwrap();
        drop(writer);
        let again = journal::read_journal::<Record>(&path, FileKind::Annotations).unwrap();
        prop_assert!(again.damaged.is_empty() && again.damaged_tail == 0, "the rewritten journal is whole");
        prop_assert_eq!(again.records.len(), kept.len() + 1);
        prop_assert_eq!(again.records.last(), Some(&next));
    }
}
