//! The examples the head trains on, kept from round to round: a round copies the embeddings of
//! the labels given since the last one, not every labelled row again, so its cost does not grow
//! with the number of labels.

use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

/// What a training row stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RowKey {
    /// A labelled image of the folder.
    Image(u32),
    /// A seed image (always positive).
    Seed(PathBuf),
}

/// Embeddings and labels of the training examples, one row each, in no particular order.
#[derive(Debug)]
pub(crate) struct TrainingRows {
    dim: i64,
    /// Room for more rows than are in use: rows `0..keys.len()` are the examples.
    values: Tensor,
    keys: Vec<RowKey>,
    labels: Vec<f32>,
    row_of: HashMap<RowKey, usize>,
}

impl TrainingRows {
    pub(crate) fn new(dim: usize) -> Self {
        Self {
            dim: dim as i64,
            values: Tensor::zeros([0, dim as i64], (Kind::Float, Device::Cpu)),
            keys: Vec::new(),
            labels: Vec::new(),
            row_of: HashMap::new(),
        }
    }

    /// Keeps the rows of the keys in `wanted` (key → positive?), with their labels updated, and
    /// drops the others; returns the wanted keys that have no row yet, for [`Self::push`].
    pub(crate) fn retain(&mut self, wanted: &HashMap<RowKey, bool>) -> Vec<(RowKey, bool)> {
        for row in (0..self.keys.len()).rev() {
            if !wanted.contains_key(&self.keys[row]) {
                self.remove(row);
            }
        }
        let mut missing = Vec::new();
        for (key, positive) in wanted {
            match self.row_of.get(key) {
                Some(&row) => self.labels[row] = f32::from(u8::from(*positive)),
                None => missing.push((key.clone(), *positive)),
            }
        }
        missing
    }

    /// The embeddings, one row per example (a view: nothing is copied).
    pub(crate) fn values(&self) -> Tensor {
        self.values.narrow(0, 0, self.keys.len() as i64)
    }

    /// The 0/1 labels, in the rows' order.
    pub(crate) fn labels(&self) -> Tensor {
        Tensor::from_slice(&self.labels)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn positives(&self) -> usize {
        self.labels.iter().filter(|y| **y > 0.5).count()
    }

    /// Adds the example `key` with embedding `values`; a key that has a row already is left as it is.
    pub(crate) fn push(&mut self, key: RowKey, values: &[f32], positive: bool) {
        if self.row_of.contains_key(&key) {
            return;
        }
        assert_eq!(values.len() as i64, self.dim, "an embedding of {} values for rows of {}", values.len(), self.dim);
        let row = self.keys.len();
        let capacity = self.values.size()[0] as usize;
        if row == capacity {
            // Doubling: copying every row again happens once per doubling, not once per round.
            let grown = Tensor::zeros([(2 * capacity).max(256) as i64, self.dim], (Kind::Float, Device::Cpu));
            grown.narrow(0, 0, row as i64).copy_(&self.values.narrow(0, 0, row as i64));
            self.values = grown;
        }
        self.values.get(row as i64).copy_(&Tensor::from_slice(values));
        self.row_of.insert(key.clone(), row);
        self.keys.push(key);
        self.labels.push(f32::from(u8::from(positive)));
    }

    /// Drops row `row`: the last row moves into its place.
    fn remove(&mut self, row: usize) {
        let last = self.keys.len() - 1;
        if row != last {
            self.values.get(row as i64).copy_(&self.values.get(last as i64));
        }
        let key = self.keys.swap_remove(row);
        self.labels.swap_remove(row);
        self.row_of.remove(&key);
        if row != last {
            self.row_of.insert(self.keys[row].clone(), row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedding_of(key: &RowKey) -> Option<Vec<f32>> {
        match key {
            RowKey::Image(id) if *id < 1000 => Some(vec![*id as f32, -(*id as f32), 1.0]),
            RowKey::Image(_) => None,
            RowKey::Seed(_) => Some(vec![0.5, 0.5, 0.5]),
        }
    }

    /// As the trainer does: keep what is still wanted, then add what has an embedding.
    fn sync(t: &mut TrainingRows, wanted: Vec<(RowKey, bool)>) -> usize {
        let missing = t.retain(&wanted.into_iter().collect());
        let mut fetched = 0;
        for (key, positive) in missing {
            fetched += 1;
            if let Some(values) = embedding_of(&key) {
                t.push(key, &values, positive);
            }
        }
        fetched
    }

    /// (key, label, values) of every row, sorted by key.
    fn rows(t: &TrainingRows) -> Vec<(String, f32, Vec<f32>)> {
        let values: Vec<f32> = Vec::try_from(t.values().flatten(0, -1)).unwrap();
        let labels: Vec<f32> = Vec::try_from(t.labels()).unwrap();
        let mut out: Vec<_> =
            t.keys.iter().enumerate().map(|(i, k)| (format!("{k:?}"), labels[i], values[i * 3..i * 3 + 3].to_vec())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn rows_follow_the_labels_through_additions_changes_removals_and_growth() {
        let mut t = TrainingRows::new(3);
        let mut labels: Vec<(u32, bool)> = (0..300).map(|id| (id, id % 7 == 0)).collect();
        let wanted = |labels: &[(u32, bool)]| labels.iter().map(|(id, y)| (RowKey::Image(*id), *y)).collect::<Vec<_>>();
        assert_eq!(sync(&mut t, wanted(&labels)), 300);
        assert_eq!(t.len(), 300);
        // Relabel one, undo two (one in the middle, the last row), add one with no embedding yet
        // and a seed image: only the new keys are fetched.
        labels[10].1 = true;
        labels.retain(|(id, _)| *id != 42 && *id != 299);
        labels.push((5000, true));
        let mut wanted_now = wanted(&labels);
        wanted_now.push((RowKey::Seed(PathBuf::from("seed.png")), true));
        assert_eq!(sync(&mut t, wanted_now), 2, "the image with no embedding and the seed");
        assert_eq!(t.len(), 299, "298 images and the seed");
        let got = rows(&t);
        let mut expected: Vec<(String, f32, Vec<f32>)> = labels
            .iter()
            .filter(|(id, _)| *id < 1000)
            .map(|(id, y)| (format!("{:?}", RowKey::Image(*id)), f32::from(u8::from(*y)), vec![*id as f32, -(*id as f32), 1.0]))
            .collect();
        expected.push((format!("{:?}", RowKey::Seed(PathBuf::from("seed.png"))), 1.0, vec![0.5, 0.5, 0.5]));
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, expected);
        assert_eq!(t.positives(), expected.iter().filter(|e| e.1 > 0.5).count());
    }
}
