//! Annotation journals written by an older binann still read, and the writer upgrades them.
//! `fixtures/annotations-v1.journal` was written by binann at format version 1 (before records
//! carried an annotator): six records by two clients, with a skip, an undo and probabilities.

use std::path::{Path, PathBuf};

use binann_core::annotations::{AnnotationState, Counts, Event, Label, Record};
use binann_core::codec::{self, FileKind};
use binann_core::journal::{self, JournalWriter};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/annotations-v1.journal")
}

fn expected_v1_records() -> Vec<Record> {
    let rec = |seq: u64, client: &str, event| Record {
        audit: None,
        seq,
        time_ms: 1_764_000_000_000 + seq * 1000,
        client: client.into(),
        annotator: String::new(),
        event,
    };
    vec![
        rec(0, "tab-a", Event::Label { id: 0, label: Label::Positive, prob: None }),
        rec(1, "tab-a", Event::Label { id: 1, label: Label::Negative, prob: Some(0.25) }),
        rec(2, "tab-b", Event::Label { id: 2, label: Label::Skip, prob: Some(0.5) }),
        rec(3, "tab-b", Event::Label { id: 3, label: Label::Positive, prob: Some(0.875) }),
        rec(4, "tab-b", Event::Undo { id: 3, of_seq: 3 }),
        rec(5, "tab-a", Event::Label { id: 4, label: Label::Negative, prob: Some(0.125) }),
    ]
}

#[test]
fn a_version_1_journal_reads_with_unnamed_annotators() {
    let c = journal::read_journal::<Record>(&fixture(), FileKind::Annotations).unwrap();
    assert_eq!(c.header.version, 1);
    assert_eq!(c.damaged_tail, 0, "version-1 records were taken for damage");
    assert_eq!(c.records, expected_v1_records());
    let state = AnnotationState::load(&fixture()).unwrap();
    assert_eq!(state.counts(), Counts { positives: 1, negatives: 2, skipped: 1 });
    assert_eq!(state.annotator_counts().collect::<Vec<_>>(), [("", state.counts())]);
    let mut out = Vec::new();
    binann_core::inspect::inspect(&fixture(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().next().unwrap().contains(r#""version":1"#), "{text}");
    assert_eq!(text.matches(r#""annotator":"""#).count(), 6, "{text}");
}

#[test]
fn the_writer_upgrades_a_version_1_journal_and_keeps_the_original() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("annotations.journal");
    std::fs::copy(fixture(), &path).unwrap();
    let original = std::fs::read(fixture()).unwrap();

    let opened = JournalWriter::open::<Record>(&path, FileKind::Annotations).unwrap();
    assert_eq!(opened.upgraded_from, Some(1));
    assert_eq!(opened.records, expected_v1_records());
    let backup = opened.backup.expect("the version-1 file is kept");
    assert_eq!(std::fs::read(&backup).unwrap(), original);
    let mut writer = opened.writer;
    let named = Record {
        audit: None,
        seq: 6,
        time_ms: 1,
        client: "tab-c".into(),
        annotator: "Zoë".into(),
        event: Event::Label { id: 5, label: Label::Positive, prob: None },
    };
    writer.append_framed(&journal::frame(&named)).unwrap();
    drop(writer);

    let c = journal::read_journal::<Record>(&path, FileKind::Annotations).unwrap();
    assert_eq!(c.header.version, codec::FORMAT_VERSION);
    assert_eq!(c.header.generation, 2, "a rewrite is a new generation");
    let mut expected = expected_v1_records();
    expected.push(named);
    assert_eq!(c.records, expected);
    let state = AnnotationState::load(&path).unwrap();
    let by_name: Vec<_> = state.annotator_counts().collect();
    assert_eq!(by_name, [("", Counts { positives: 1, negatives: 2, skipped: 1 }), ("Zoë", Counts { positives: 1, ..Counts::default() })]);

    // Opening again finds the current version: nothing is rewritten or copied.
    let again = JournalWriter::open::<Record>(&path, FileKind::Annotations).unwrap();
    assert_eq!((again.upgraded_from, again.backup), (None, None));
    assert_eq!(again.records.len(), 7);
}
