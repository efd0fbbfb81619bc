//! Sketches: every embedded image reduced to a few bytes, so that the server can find an image's
//! nearest neighbours ("more like this") without the embeddings (5 KB an image) or libtorch.
//!
//! The selector writes them (it reduces the embeddings anyway to find the folder's visual kinds):
//! each unit-length embedding projected onto the [`SKETCH_DIM`] principal directions of the first
//! embedding chunk, quantised to one signed byte each with one scale for the file. 1,000,000 images take 32 MB; a brute-force
//! search over them is a few tens of milliseconds.

use serde::{Deserialize, Serialize};

use crate::codec::{self, FileKind};

/// Values per sketch.
pub const SKETCH_DIM: usize = 32;

/// The sketches of the embedded images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sketches {
    /// The images, in row order.
    pub ids: Vec<u32>,
    /// `ids.len() * SKETCH_DIM` values, each a signed byte stored as its two's-complement byte.
    #[serde(with = "serde_bytes")]
    pub values: Vec<u8>,
    /// What a stored value of 1 stands for.
    pub scale: f32,
    /// The embeddings they came from (backbone and input size).
    pub model: String,
}

impl codec::RunDirFile for Sketches {
    const KIND: FileKind = FileKind::Sketches;

    /// One whose sizes disagree is refused.
    fn validate(&self) -> Result<(), String> {
        if self.values.len() != self.ids.len() * SKETCH_DIM || !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(format!(
                "{} ids need {} values, the file holds {} (scale {})",
                self.ids.len(),
                self.ids.len() * SKETCH_DIM,
                self.values.len(),
                self.scale
            ));
        }
        Ok(())
    }
}

impl Sketches {
    /// Quantises `rows` (SKETCH_DIM values per id, of any float type) into a file's content.
    pub fn quantise<T: Copy + Into<f32>>(ids: Vec<u32>, rows: &[T], model: String) -> Self {
        let largest = rows.iter().fold(0f32, |m, v| m.max((*v).into().abs()));
        let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
        let values = rows.iter().map(|v| ((*v).into() / scale).round().clamp(-127.0, 127.0) as i8 as u8).collect();
        Self { ids, values, scale, model }
    }

    fn row(&self, i: usize) -> &[u8] {
        &self.values[i * SKETCH_DIM..(i + 1) * SKETCH_DIM]
    }

    /// Up to `count` images nearest to `id` (squared Euclidean distance between sketches, ties by
    /// id), leaving out `id` itself and every image `skip` says to; None when `id` has no sketch.
    pub fn nearest(&self, id: u32, count: usize, skip: impl Fn(u32) -> bool) -> Option<Vec<u32>> {
        let me = self.ids.iter().position(|i| *i == id)?;
        let target: Vec<i32> = self.row(me).iter().map(|v| i32::from(*v as i8)).collect();
        let mut scored: Vec<(i32, u32)> = self
            .ids
            .iter()
            .enumerate()
            .filter(|(_, other)| **other != id && !skip(**other))
            .map(|(i, other)| {
                let d: i32 = self.row(i).iter().zip(&target).map(|(v, t)| (i32::from(*v as i8) - t).pow(2)).sum();
                (d, *other)
            })
            .collect();
        let count = count.min(scored.len());
        if count == 0 {
            return Some(Vec::new());
        }
        scored.select_nth_unstable(count - 1);
        scored.truncate(count);
        scored.sort_unstable();
        Some(scored.into_iter().map(|(_, other)| other).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::RunDirFile;

    #[test]
    fn nearest_returns_the_true_neighbours_in_order() {
        // Points on a line in the first coordinate: the neighbours of 10 are 9 and 11, then 8 and 12.
        let ids: Vec<u32> = (0..30).collect();
        let rows: Vec<f32> = ids.iter().flat_map(|i| std::iter::once(*i as f32).chain(std::iter::repeat_n(0.0, SKETCH_DIM - 1))).collect();
        let s = Sketches::quantise(ids, &rows, "m".into());
        let mut got = s.nearest(10, 4, |_| false).unwrap();
        assert_eq!(got[..2].iter().copied().collect::<std::collections::BTreeSet<_>>(), [9, 11].into());
        got.sort_unstable();
        assert_eq!(got, [8, 9, 11, 12]);
        assert_eq!(s.nearest(10, 2, |id| id == 9 || id == 11).unwrap().len(), 2);
        assert!(!s.nearest(10, 2, |id| id == 9 || id == 11).unwrap().contains(&9));
        assert_eq!(s.nearest(99, 2, |_| false), None, "no sketch");
        assert_eq!(s.nearest(0, 100, |_| false).unwrap().len(), 29);
    }

    #[test]
    fn a_file_whose_sizes_disagree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sketches.bin");
        let good = Sketches::quantise(vec![1, 2], &[0.5; 2 * SKETCH_DIM], "m".into());
        good.save(&path, 3).unwrap();
        assert_eq!(Sketches::load(&path).unwrap(), (3, good.clone()));
        let bad = Sketches { values: vec![0; 5], ..good };
        bad.save(&path, 4).unwrap();
        let err = Sketches::load(&path).unwrap_err().to_string();
        assert!(err.contains("sketches.bin") && err.contains("2 ids need 64 values"), "{err}");
    }
}
