//! Annotations: the journal's record type, and the state every reader rebuilds from it.
//!
//! The journal holds events, never a rewritten table: a label (`Label`), or the undo of one
//! client's latest label (`Undo`). Replaying the events in order gives the same state in the
//! server, the trainer and `inspect`.
//!
//! Two names say who gave a record: the client (a browser tab or a script, whose undo stack it
//! belongs to) and the annotator (the name the person typed, shared by all their tabs; empty when
//! they gave none). Records of format version 1 have no annotator and read as unnamed.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, FileError, FileKind};
use crate::journal::{self, JournalRecord};

/// What a person said about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// The image belongs to the (rare) positive class.
    Positive,
    /// It does not.
    Negative,
    /// The person chose not to decide; the image is not shown again.
    Skip,
}

impl Label {
    /// Parses the API's spelling ("positive", "negative", "skip": the same as in every file).
    pub fn parse(s: &str) -> Option<Self> {
        crate::cli::parse_value(s)
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::cli::value_name(self))
    }
}

/// One journal event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Image `id` got `label`; `prob` is what the model said about it just before, if anything.
    Label {
        /// The image.
        id: u32,
        /// The label.
        label: Label,
        /// The model's probability shown with the image, before the label.
        prob: Option<f32>,
    },
    /// The client undid its label with sequence number `of_seq`, on image `id`.
    Undo {
        /// The image.
        id: u32,
        /// The `seq` of the record undone.
        of_seq: u64,
    },
}

/// One record of the annotation journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the journal, from 0, one more with every record. A gap is records lost to
    /// damage (see [`AnnotationState::lost_records`]).
    pub seq: u64,
    /// When the server accepted it (ms since the epoch).
    pub time_ms: u64,
    /// Which client (browser tab or script) gave it; undo is per client.
    pub client: String,
    /// The name of the person who gave it; empty when they gave none (and in every record of a
    /// format-version-1 journal).
    pub annotator: String,
    /// What happened.
    pub event: Event,
    /// For a label of an audit pick (an image drawn uniformly at random from the unlabelled ones,
    /// handed out like any other): the draw. None for every other record, and in journals of
    /// format versions 1 and 2.
    pub audit: Option<AuditPick>,
}

/// The journal's high-water mark, kept beside it by the server: how many records (the next seq)
/// the journal has held. A journal that later holds fewer was cut short or replaced by an older
/// copy, which loses acknowledged labels without a trace inside the journal itself; the server
/// compares the two at start and says so (see [`JournalMark::lost_since`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalMark {
    /// The journal's next seq when the mark was written.
    pub records: u64,
    /// When it was written (ms since the epoch).
    pub written_ms: u64,
}

impl crate::RunDirFile for JournalMark {
    const KIND: FileKind = FileKind::JournalMark;
}

impl JournalMark {
    /// Records the journal has lost since this mark was written, when it now holds records up to
    /// `next_seq`: None when it holds at least as many.
    pub fn lost_since(&self, next_seq: u64) -> Option<u64> {
        (self.records > next_seq).then(|| self.records - next_seq)
    }
}

/// How an audit pick was drawn (see [`crate::estimate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPick {
    /// Images unlabelled (neither labelled nor skipped) when it was drawn.
    pub unlabelled: u64,
    /// Positive labels in force when it was drawn.
    pub found_before: u64,
}

/// A record as format version 2 wrote it.
#[derive(Deserialize)]
struct RecordV2 {
    seq: u64,
    time_ms: u64,
    client: String,
    annotator: String,
    event: Event,
}

/// A record as format version 1 wrote it: bincode is positional, so the old shape is kept to
/// decode old journals.
#[derive(Deserialize)]
struct RecordV1 {
    seq: u64,
    time_ms: u64,
    client: String,
    event: Event,
}

impl JournalRecord for Record {
    fn decode_record(version: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        if version == 1 {
            let RecordV1 { seq, time_ms, client, event } = codec::decode_value(payload)?;
            return Ok(Record { seq, time_ms, client, annotator: String::new(), event, audit: None });
        }
        if version == 2 {
            let RecordV2 { seq, time_ms, client, annotator, event } = codec::decode_value(payload)?;
            return Ok(Record { seq, time_ms, client, annotator, event, audit: None });
        }
        codec::decode_value(payload)
    }
}

/// An annotator's name, interned by [`AnnotationState`] so that every label in force stays small
/// and `Copy`; [`AnnotationState::annotator_name`] gives the name back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnnotatorId(u32);

/// The label an image currently has, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// The label.
    pub label: Label,
    /// The record that gave it.
    pub seq: u64,
    /// The model's probability before the label.
    pub prob: Option<f32>,
    /// When it was given.
    pub time_ms: u64,
    /// Who gave it.
    pub annotator: AnnotatorId,
}

#[derive(Debug, Clone)]
struct UndoEntry {
    seq: u64,
    id: u32,
    previous: Option<Effective>,
}

/// Counts of current labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Images labelled positive.
    pub positives: u64,
    /// Images labelled negative.
    pub negatives: u64,
    /// Images skipped.
    pub skipped: u64,
}

impl Counts {
    fn add(&mut self, label: Label, delta: i64) {
        let slot = match label {
            Label::Positive => &mut self.positives,
            Label::Negative => &mut self.negatives,
            Label::Skip => &mut self.skipped,
        };
        *slot = slot.saturating_add_signed(delta);
    }
    /// Positives plus negatives.
    pub fn annotated(&self) -> u64 {
        self.positives + self.negatives
    }
}

/// Why an event cannot be applied to the current state.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApplyError {
    /// The record's seq is below the next one (a gap above it is records lost to damage, and is
    /// not an error).
    #[error("record seq {found} out of order (expected {expected} or more)")]
    OutOfOrder {
        /// Expected seq.
        expected: u64,
        /// Found seq.
        found: u64,
    },
    /// Undo of something that is not the client's latest label.
    #[error("undo of seq {of_seq} by {client} does not match its latest label")]
    BadUndo {
        /// Client.
        client: String,
        /// Seq named by the undo.
        of_seq: u64,
    },
}

/// The state of all annotations, rebuilt from the journal.
#[derive(Debug, Default, Clone)]
pub struct AnnotationState {
    current: HashMap<u32, Effective>,
    undo_stacks: HashMap<String, Vec<UndoEntry>>,
    counts: Counts,
    next_seq: u64,
    /// Positive/negative labels in force, in the order given (for charts and online accuracy).
    history: Vec<(u32, Effective)>,
    /// Seqs of labels undone; such a label is never restored by undoing a later one.
    undone: std::collections::HashSet<u64>,
    /// Every annotator name seen, indexed by [`AnnotatorId`] ("" included when seen).
    annotator_names: Vec<String>,
    /// The id of each name in `annotator_names`.
    annotator_ids: HashMap<String, AnnotatorId>,
    /// Counts of the labels in force given by each annotator, indexed by [`AnnotatorId`].
    annotator_counts: Vec<Counts>,
    /// Labels of audit picks, in the order given: (seq, image, the draw). One whose label is no
    /// longer in force (undone, or relabelled) no longer counts (see [`Self::audit_labels`]).
    audits: Vec<(u64, u32, AuditPick)>,
    /// Records missing from the sequence (gaps in `seq`): lost to damage in the journal.
    lost_records: u64,
    /// Undo records that matched no label of their client because records before them were lost;
    /// they changed nothing.
    orphan_undos: u64,
}

impl AnnotationState {
    /// Replays records into a fresh state.
    pub fn replay(records: &[Record]) -> Result<Self, ApplyError> {
        let mut state = Self::default();
        for r in records {
            state.apply(r)?;
        }
        Ok(state)
    }

    /// Reads and replays an annotation journal (a missing file is an empty state).
    pub fn load(path: &Path) -> Result<Self, FileError> {
        match journal::read_journal::<Record>(path, FileKind::Annotations) {
            Ok(contents) => Self::replayed(path, &contents.records),
            Err(e) if e.is_not_found() => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Replays records read from the journal at `path` (an error names the file).
    fn replayed(path: &Path, records: &[Record]) -> Result<Self, FileError> {
        Self::replay(records).map_err(|e| FileError::decode(path, DecodeError::Payload(e.to_string())))
    }

    /// The audit labels still in force, oldest first, for [`crate::estimate::positives_left`]. An
    /// audit pick that was skipped, undone or relabelled by a later label does not count: the
    /// sample is the audit picks that were answered positive or negative, and stayed so.
    pub fn audit_labels(&self) -> Vec<crate::estimate::AuditLabel> {
        self.audits
            .iter()
            .filter_map(|(seq, id, pick)| {
                let e = self.current.get(id).filter(|e| e.seq == *seq && e.label != Label::Skip)?;
                Some(crate::estimate::AuditLabel {
                    unlabelled: pick.unlabelled,
                    found_before: pick.found_before,
                    positive: e.label == Label::Positive,
                })
            })
            .collect()
    }

    /// The draw of the audit label with sequence number `seq`, if it was one.
    pub fn audit_pick(&self, seq: u64) -> Option<AuditPick> {
        self.audits.iter().find(|(s, ..)| *s == seq).map(|(_, _, pick)| *pick)
    }

    /// The estimate of the positives left unlabelled among `total` images (see [`crate::estimate`]).
    pub fn positives_left(&self, total: u64) -> Option<crate::estimate::PositivesLeft> {
        let c = self.counts;
        crate::estimate::positives_left(&self.audit_labels(), total.saturating_sub(c.annotated() + c.skipped), c.positives)
    }

    /// The seq the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records missing from the journal's sequence: records lost to damage in the file (the
    /// reader skipped them and kept the ones after). 0 for a whole journal.
    pub fn lost_records(&self) -> u64 {
        self.lost_records
    }

    /// Undo records that changed nothing because the label they undid was lost.
    pub fn orphan_undos(&self) -> u64 {
        self.orphan_undos
    }

    /// Applies one record; on error the state is unchanged. A record whose seq jumps ahead of the
    /// next one follows records lost to damage: the gap is counted in [`Self::lost_records`].
    pub fn apply(&mut self, r: &Record) -> Result<(), ApplyError> {
        if r.seq < self.next_seq {
            return Err(ApplyError::OutOfOrder { expected: self.next_seq, found: r.seq });
        }
        let gap = r.seq - self.next_seq;
        match r.event {
            Event::Label { id, label, prob } => {
                let annotator = self.intern_annotator(&r.annotator);
                let new = Effective { label, seq: r.seq, prob, time_ms: r.time_ms, annotator };
                let previous = self.current.insert(id, new);
                if let Some(p) = previous {
                    self.count(&p, -1);
                    self.remove_history(p.seq);
                }
                self.count(&new, 1);
                if label != Label::Skip {
                    self.history.push((id, new));
                }
                self.undo_stacks.entry(r.client.clone()).or_default().push(UndoEntry { seq: r.seq, id, previous });
                if let Some(pick) = r.audit {
                    self.audits.push((r.seq, id, pick));
                }
            }
            Event::Undo { id, of_seq } => {
                let lost_before = self.lost_records + gap > 0;
                let stack = self.undo_stacks.get_mut(&r.client);
                let top = stack.as_ref().and_then(|s| s.last());
                let at = if top.is_some_and(|t| t.seq == of_seq && t.id == id) {
                    stack.as_ref().map(|s| s.len() - 1)
                } else if lost_before {
                    // Records of this client were lost (an undo among them leaves the label it
                    // undid on the stack): the undo names its label, wherever it is on the stack.
                    stack.as_ref().and_then(|s| s.iter().rposition(|t| t.seq == of_seq && t.id == id))
                } else {
                    None
                };
                let Some(at) = at else {
                    if !lost_before {
                        return Err(ApplyError::BadUndo { client: r.client.clone(), of_seq });
                    }
                    // The label it undid was lost with the damaged records: nothing to undo.
                    self.orphan_undos += 1;
                    self.lost_records += gap;
                    self.next_seq = r.seq + 1;
                    return Ok(());
                };
                let entry = stack.expect("checked above").remove(at);
                self.undone.insert(of_seq);
                // A later label by someone else stands; only undo what is still in force.
                if self.current.get(&id).is_some_and(|c| c.seq == of_seq) {
                    let undone = self.current.remove(&id).expect("checked above");
                    self.count(&undone, -1);
                    self.remove_history(undone.seq);
                    if let Some(p) = entry.previous.filter(|p| !self.undone.contains(&p.seq)) {
                        self.current.insert(id, p);
                        self.count(&p, 1);
                        if p.label != Label::Skip {
                            let at = self.history.partition_point(|(_, e)| e.seq < p.seq);
                            self.history.insert(at, (id, p));
                        }
                    }
                }
            }
        }
        self.lost_records += gap;
        self.next_seq = r.seq + 1;
        Ok(())
    }

    fn intern_annotator(&mut self, name: &str) -> AnnotatorId {
        if let Some(id) = self.annotator_ids.get(name) {
            return *id;
        }
        let id = AnnotatorId(self.annotator_names.len() as u32);
        self.annotator_names.push(name.to_owned());
        self.annotator_ids.insert(name.to_owned(), id);
        self.annotator_counts.push(Counts::default());
        id
    }

    /// Adds (`delta` 1) or removes (-1) a label in force to the totals and to its annotator's.
    fn count(&mut self, e: &Effective, delta: i64) {
        self.counts.add(e.label, delta);
        self.annotator_counts[e.annotator.0 as usize].add(e.label, delta);
    }

    fn remove_history(&mut self, seq: u64) {
        if let Ok(at) = self.history.binary_search_by_key(&seq, |(_, e)| e.seq) {
            self.history.remove(at);
        }
    }

    /// What `client` would undo next: (image id, seq of its label).
    pub fn undo_target(&self, client: &str) -> Option<(u32, u64)> {
        self.undo_stacks.get(client)?.last().map(|e| (e.id, e.seq))
    }

    /// The label image `id` has now.
    pub fn get(&self, id: u32) -> Option<Effective> {
        self.current.get(&id).copied()
    }

    /// True when the image has a label or was skipped.
    pub fn is_done(&self, id: u32) -> bool {
        self.current.contains_key(&id)
    }

    /// Current counts.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The name behind an annotator id ("" for labels given without a name).
    pub fn annotator_name(&self, id: AnnotatorId) -> &str {
        &self.annotator_names[id.0 as usize]
    }

    /// Each annotator who has a label in force, with the counts of those labels (they add up to
    /// [`Self::counts`]); in the order the names first appeared in the journal.
    pub fn annotator_counts(&self) -> impl Iterator<Item = (&str, Counts)> + '_ {
        self.annotator_names
            .iter()
            .zip(&self.annotator_counts)
            .filter(|(_, c)| **c != Counts::default())
            .map(|(name, c)| (name.as_str(), *c))
    }

    /// Every image with a label in force (including skips).
    pub fn labels(&self) -> impl Iterator<Item = (u32, Effective)> + '_ {
        self.current.iter().map(|(id, e)| (*id, *e))
    }

    /// Positive/negative labels in force, oldest first.
    pub fn history(&self) -> &[(u32, Effective)] {
        &self.history
    }

    /// The model's online accuracy: of the latest `window` labels in force that were shown with a
    /// probability (all of them when `None`), how many that probability put on the right side of
    /// 0.5. Returns (judged, correct).
    pub fn online_accuracy(&self, window: Option<usize>) -> (u64, u64) {
        self.history
            .iter()
            .rev()
            .filter_map(|(_, e)| e.prob.map(|p| (p >= 0.5) == (e.label == Label::Positive)))
            .take(window.unwrap_or(usize::MAX))
            .fold((0, 0), |(judged, correct), right| (judged + 1, correct + u64::from(right)))
    }

    /// Positive/negative labels given at or after `since_ms`.
    pub fn labels_since(&self, since_ms: u64) -> u64 {
        self.history.iter().rev().take_while(|(_, e)| e.time_ms >= since_ms).count() as u64
    }
}

/// An [`AnnotationState`] kept up to date with its journal: each [`refresh`](Self::refresh)
/// applies only the records appended since the last one, so a process that reads the labels
/// after every label (the trainer) pays for the new ones, not for the whole history.
#[derive(Debug)]
pub struct AnnotationFollower {
    path: std::path::PathBuf,
    journal: journal::JournalFollower,
    state: AnnotationState,
}

impl AnnotationFollower {
    /// A follower of the journal at `path`; nothing is read before [`Self::refresh`].
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            journal: journal::JournalFollower::new(path, FileKind::Annotations),
            state: AnnotationState::default(),
        }
    }

    /// The state of the journal now (a missing journal is an empty state). After an error the
    /// next call reads the journal whole.
    pub fn refresh(&mut self) -> Result<&AnnotationState, FileError> {
        if let Err(e) = self.update() {
            self.journal.restart();
            return Err(e);
        }
        Ok(&self.state)
    }

    fn update(&mut self) -> Result<(), FileError> {
        let records = match self.journal.read::<Record>() {
            Ok(journal::Followed::Appended(records)) => records,
            Ok(journal::Followed::Whole(records)) => {
                self.state = AnnotationState::replayed(&self.path, &records)?;
                return Ok(());
            }
            Err(e) if e.is_not_found() => {
                self.state = AnnotationState::default();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for record in &records {
            if let Err(e) = self.state.apply(record) {
                // Appended records that do not follow the ones applied (a journal copied over
                // this one in place): the whole file decides.
                tracing::warn!(path = %self.path.display(), "reading the annotations again from the start: {e}");
                self.journal.restart();
                return self.update();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_spelled_the_same_in_the_api_and_in_every_file() {
        use clap::ValueEnum;
        for l in Label::value_variants() {
            let json = serde_json::to_string(l).unwrap();
            assert_eq!(json, format!("\"{l}\""), "serde and the API spell {l:?} apart");
            assert_eq!(Label::parse(&l.to_string()), Some(*l));
        }
        assert_eq!(Label::Positive.to_string(), "positive");
        assert_eq!(Label::parse("Positive"), None, "exactly the spelling, no other case");
        assert_eq!(Label::parse("pos"), None);
    }

    fn label(seq: u64, client: &str, id: u32, l: Label) -> Record {
        Record {
            audit: None,
            seq,
            time_ms: seq,
            client: client.into(),
            annotator: String::new(),
            event: Event::Label { id, label: l, prob: None },
        }
    }
    #[test]
    fn a_follower_agrees_with_a_whole_replay_after_each_append() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("annotations.journal");
        let mut follower = AnnotationFollower::new(&path);
        assert_eq!(follower.refresh().unwrap().labels().count(), 0, "a missing journal is an empty state");
        let mut writer = journal::JournalWriter::open::<Record>(&path, FileKind::Annotations).unwrap().writer;
        let records = [
            label(0, "a", 1, Label::Positive),
            label(1, "a", 2, Label::Negative),
            undo(2, "a", 2, 1),
            label(3, "b", 1, Label::Negative),
            label(4, "a", 7, Label::Skip),
        ];
        for record in &records {
            writer.append_framed(&journal::frame(record)).unwrap();
            let followed: Vec<(u32, Effective)> = follower.refresh().unwrap().labels().collect();
            let whole: Vec<(u32, Effective)> = AnnotationState::load(&path).unwrap().labels().collect();
            let sorted = |mut v: Vec<(u32, Effective)>| {
                v.sort_by_key(|(id, _)| *id);
                v.into_iter().map(|(id, e)| (id, e.label, e.seq)).collect::<Vec<_>>()
            };
            assert_eq!(sorted(followed), sorted(whole));
        }
        let state = follower.refresh().unwrap();
        assert_eq!(state.get(1).map(|e| e.label), Some(Label::Negative));
        assert_eq!(state.get(2), None, "undone");
        assert_eq!(state.next_seq(), 5);
        // A journal copied over this one in place, starting again at seq 0: read whole.
        drop(writer);
        let copy = tmp.path().join("other.journal");
        let mut other = journal::JournalWriter::open::<Record>(&copy, FileKind::Annotations).unwrap().writer;
        other.append_framed(&journal::frame(&label(0, "c", 9, Label::Positive))).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&journal::frame(&label(0, "c", 9, Label::Positive)));
        std::fs::write(&path, &bytes).unwrap();
        assert!(follower.refresh().is_err(), "seq 0 after seq 4 is out of order, also when read whole");
        std::fs::copy(&copy, &path).unwrap();
        let state = follower.refresh().unwrap();
        assert_eq!(state.labels().map(|(id, _)| id).collect::<Vec<_>>(), vec![9]);
    }

    fn undo(seq: u64, client: &str, id: u32, of_seq: u64) -> Record {
        Record { audit: None, seq, time_ms: seq, client: client.into(), annotator: String::new(), event: Event::Undo { id, of_seq } }
    }

    #[test]
    fn labels_relabels_and_undo_per_client() {
        let mut s = AnnotationState::default();
        s.apply(&label(0, "a", 1, Label::Positive)).unwrap();
        s.apply(&label(1, "b", 2, Label::Negative)).unwrap();
        s.apply(&label(2, "a", 3, Label::Skip)).unwrap();
        assert_eq!(s.counts(), Counts { positives: 1, negatives: 1, skipped: 1 });
        assert_eq!(s.undo_target("a"), Some((3, 2)));
        assert_eq!(s.undo_target("b"), Some((2, 1)));
        s.apply(&undo(3, "a", 3, 2)).unwrap();
        assert!(!s.is_done(3));
        assert_eq!(s.undo_target("a"), Some((1, 0)));
        // b relabels a's image; a's later undo must not erase b's label.
        s.apply(&label(4, "b", 1, Label::Negative)).unwrap();
        assert_eq!(s.counts(), Counts { positives: 0, negatives: 2, skipped: 0 });
        s.apply(&undo(5, "a", 1, 0)).unwrap();
        assert_eq!(s.get(1).unwrap().label, Label::Negative);
        // b undoes its relabel: a's label was undone meanwhile, so the image ends up unlabelled.
        s.apply(&undo(6, "b", 1, 4)).unwrap();
        assert!(!s.is_done(1));
        assert_eq!(s.history().iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2]);
        assert_eq!(s.apply(&undo(7, "a", 1, 0)), Err(ApplyError::BadUndo { client: "a".into(), of_seq: 0 }));
        // An undo restores the label it replaced.
        s.apply(&label(7, "a", 5, Label::Positive)).unwrap();
        s.apply(&label(8, "b", 5, Label::Negative)).unwrap();
        s.apply(&undo(9, "b", 5, 8)).unwrap();
        assert_eq!(s.get(5).unwrap().label, Label::Positive);
        assert_eq!(s.history().iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 5]);
        assert!(matches!(s.apply(&label(5, "a", 1, Label::Skip)), Err(ApplyError::OutOfOrder { .. })));
        assert_eq!(s.lost_records(), 0);
    }

    /// Records lost to damage leave a gap in the sequence: counted, and the undos that named a
    /// lost label change nothing, while those whose own label survived still apply.
    #[test]
    fn a_gap_in_the_sequence_is_records_lost() {
        // Written: a labels 1 (0) and 2 (1), undoes 2 (2), labels 3 (3), undoes 3 (4), undoes 1
        // (5), labels 4 (6). Lost: records 2 and 3, so the undo of 1 is not on top of a's stack.
        let kept = [label(0, "a", 1, Label::Positive), label(1, "a", 2, Label::Negative), undo(4, "a", 3, 3), undo(5, "a", 1, 0)];
        let mut s = AnnotationState::replay(&kept).unwrap();
        assert_eq!(s.lost_records(), 2);
        assert_eq!(s.orphan_undos(), 1, "the undo of the lost label 3");
        assert!(!s.is_done(1), "the undo of label 1 applies though label 2 sits above it");
        assert!(s.is_done(2), "label 2's undo was lost with it");
        s.apply(&label(6, "a", 4, Label::Negative)).unwrap();
        assert_eq!((s.next_seq(), s.lost_records()), (7, 2));
        // Without records lost, an undo that does not match is an error, as before.
        let mut whole = AnnotationState::replay(&kept[..2]).unwrap();
        assert!(matches!(whole.apply(&undo(2, "a", 1, 0)), Err(ApplyError::BadUndo { .. })));
    }

    #[test]
    fn labels_in_force_are_counted_per_annotator() {
        let by = |seq: u64, client: &str, annotator: &str, event: Event| Record {
            audit: None,
            seq,
            time_ms: seq,
            client: client.into(),
            annotator: annotator.into(),
            event,
        };
        let mut s = AnnotationState::default();
        s.apply(&by(0, "tab1", "ann", Event::Label { id: 1, label: Label::Positive, prob: None })).unwrap();
        s.apply(&by(1, "tab1", "ann", Event::Label { id: 2, label: Label::Skip, prob: None })).unwrap();
        s.apply(&by(2, "tab2", "bob", Event::Label { id: 3, label: Label::Negative, prob: None })).unwrap();
        assert_eq!(s.annotator_name(s.get(3).unwrap().annotator), "bob");
        // bob relabels ann's image: the label in force, and its count, move to bob.
        s.apply(&by(3, "tab2", "bob", Event::Label { id: 1, label: Label::Negative, prob: None })).unwrap();
        let counts: Vec<_> = s.annotator_counts().collect();
        assert_eq!(counts, [("ann", Counts { skipped: 1, ..Counts::default() }), ("bob", Counts { negatives: 2, ..Counts::default() })]);
        // bob's undo gives the image back to ann's label.
        s.apply(&by(4, "tab2", "bob", Event::Undo { id: 1, of_seq: 3 })).unwrap();
        let counts: Vec<_> = s.annotator_counts().collect();
        assert_eq!(
            counts,
            [("ann", Counts { positives: 1, skipped: 1, ..Counts::default() }), ("bob", Counts { negatives: 1, ..Counts::default() })]
        );
        // An annotator with nothing left in force is not listed; an unnamed label is listed as "".
        s.apply(&by(5, "tab2", "bob", Event::Undo { id: 3, of_seq: 2 })).unwrap();
        s.apply(&by(6, "tab3", "", Event::Label { id: 4, label: Label::Positive, prob: None })).unwrap();
        let counts: Vec<_> = s.annotator_counts().collect();
        assert_eq!(
            counts,
            [("ann", Counts { positives: 1, skipped: 1, ..Counts::default() }), ("", Counts { positives: 1, ..Counts::default() })]
        );
        let total = counts.iter().fold(Counts::default(), |t, (_, c)| Counts {
            positives: t.positives + c.positives,
            negatives: t.negatives + c.negatives,
            skipped: t.skipped + c.skipped,
        });
        assert_eq!(total, s.counts());
    }

    #[test]
    fn online_accuracy_judges_each_label_by_the_probability_shown_before_it() {
        let mut s = AnnotationState::default();
        let shown = [(Label::Positive, Some(0.9)), (Label::Negative, Some(0.7)), (Label::Negative, None), (Label::Negative, Some(0.2))];
        for (seq, (l, prob)) in shown.into_iter().enumerate() {
            let r = Record {
                audit: None,
                seq: seq as u64,
                time_ms: 0,
                client: "a".into(),
                annotator: String::new(),
                event: Event::Label { id: seq as u32, label: l, prob },
            };
            s.apply(&r).unwrap();
        }
        assert_eq!(s.online_accuracy(None), (3, 2));
        assert_eq!(s.online_accuracy(Some(2)), (2, 1));
    }
}
