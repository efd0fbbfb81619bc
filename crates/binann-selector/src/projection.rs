//! The linear maps from a backbone embedding (hundreds of values) to its sketch (SKETCH_DIM
//! values): what every order over the folder and every nearest-neighbour search works on.

use binann_core::ranking::SplitMix64;

use crate::{SKETCH_DIM, dot};

/// The linear map from an embedding to its sketch: the embedding made unit-length, less `mean`,
/// onto the SKETCH_DIM rows of `basis`.
#[derive(Debug, Clone)]
pub struct Projection {
    /// Values per embedding.
    pub(crate) dim: usize,
    /// Subtracted from each unit-length embedding (zero for the random projection).
    mean: Vec<f32>,
    /// SKETCH_DIM rows of `dim` values.
    basis: Vec<f32>,
}

/// Rows the principal directions are fitted on at most.
const PRINCIPAL_FIT_ROWS: usize = 4096;

impl Projection {
    /// A fixed random projection: SKETCH_DIM × `dim` signs, scaled so that lengths are kept on
    /// average (for too few embeddings to fit [`Projection::principal`]).
    pub fn random(dim: usize) -> Self {
        let mut rng = SplitMix64(0x005E_ED0F_B1A5);
        let scale = 1.0 / (SKETCH_DIM as f32).sqrt();
        let basis = (0..SKETCH_DIM * dim).map(|_| if rng.next_u64() & 1 == 0 { scale } else { -scale }).collect();
        Self { dim, mean: vec![0.0; dim], basis }
    }

    /// The SKETCH_DIM principal directions of the unit-length `rows` (`dim` values each; the first
    /// 4,096 rows), by subspace iteration; the random projection for fewer than 2 × SKETCH_DIM
    /// non-zero rows. Repeatable: the same rows give the same projection.
    ///
    /// Why: random signs keep distances only roughly in 32 values, and the nearest images of a
    /// positive are what look-alikes and exploring rest on. Over the benchmark's folders, on the
    /// final map's 1,280 values (the embedding before the five depths), of an ankle boot's 8
    /// nearest images 37 % were ankle boots with random signs, 52 % with the principal directions
    /// of the first 256 embeddings (as many as from 4,096), and 57 % in the full 1,280 values.
    pub fn principal(rows: &[f32], dim: usize) -> Self {
        let units: Vec<Vec<f32>> = rows
            .chunks_exact(dim)
            .filter_map(|r| {
                let norm = dot(r, r).sqrt();
                (norm > 0.0).then(|| r.iter().map(|v| v / norm).collect())
            })
            .take(PRINCIPAL_FIT_ROWS)
            .collect();
        if units.len() < 2 * SKETCH_DIM {
            return Self::random(dim);
        }
        let mut mean = vec![0f32; dim];
        for u in &units {
            for (m, v) in mean.iter_mut().zip(u) {
                *m += v / units.len() as f32;
            }
        }
        let centred: Vec<Vec<f32>> = units.iter().map(|u| u.iter().zip(&mean).map(|(v, m)| v - m).collect()).collect();
        let mut basis = Self::random(dim).basis;
        for _ in 0..SUBSPACE_ROUNDS {
            // basis <- Xᵀ X basis, then orthonormal again (Gram-Schmidt).
            let mut next = vec![0f32; SKETCH_DIM * dim];
            for x in &centred {
                for (j, b) in basis.chunks_exact(dim).enumerate() {
                    let p = dot(x, b);
                    for (n, v) in next[j * dim..(j + 1) * dim].iter_mut().zip(x) {
                        *n += p * v;
                    }
                }
            }
            for j in 0..SKETCH_DIM {
                let (done, rest) = next.split_at_mut(j * dim);
                let row = &mut rest[..dim];
                for earlier in done.chunks_exact(dim) {
                    let p = dot(row, earlier);
                    for (v, e) in row.iter_mut().zip(earlier) {
                        *v -= p * e;
                    }
                }
                let norm = dot(row, row).sqrt();
                // A direction with no variance left (fewer distinct rows than SKETCH_DIM) is zero:
                // its sketch value is 0 for every image.
                let scale = if norm > 1e-12 { 1.0 / norm } else { 0.0 };
                row.iter_mut().for_each(|v| *v *= scale);
            }
            basis = next;
        }
        Self { dim, mean, basis }
    }

    /// The sketches of `rows` (row-major, `dim` values each). A zero row (an image that failed to
    /// decode) stays at the origin.
    pub fn apply(&self, rows: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; rows.len() / self.dim * SKETCH_DIM];
        for (r, row) in rows.chunks_exact(self.dim).enumerate() {
            let norm = dot(row, row).sqrt();
            if norm == 0.0 {
                continue;
            }
            let centred: Vec<f32> = row.iter().zip(&self.mean).map(|(v, m)| v / norm - m).collect();
            for (o, b) in out[r * SKETCH_DIM..(r + 1) * SKETCH_DIM].iter_mut().zip(self.basis.chunks_exact(self.dim)) {
                *o = dot(&centred, b);
            }
        }
        out
    }
}

/// Rounds of subspace iteration for [`Projection::principal`].
const SUBSPACE_ROUNDS: usize = 30;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance2;

    #[test]
    fn projection_keeps_near_things_near() {
        let dim = 1280;
        let mut rng = SplitMix64(9);
        let a: Vec<f32> = (0..dim).map(|_| rng.next_f64() as f32).collect();
        let near: Vec<f32> = a.iter().map(|v| v + 0.02 * (rng.next_f64() as f32 - 0.5)).collect();
        let far: Vec<f32> = (0..dim).map(|_| rng.next_f64() as f32 * (rng.next_f64() as f32)).collect();
        let rows: Vec<f32> = [a.clone(), near, far, vec![0.0; dim]].concat();
        let s = Projection::random(dim).apply(&rows);
        let row = |i: usize| &s[i * SKETCH_DIM..(i + 1) * SKETCH_DIM];
        assert!(distance2(row(0), row(1)) * 20.0 < distance2(row(0), row(2)));
        assert!(row(3).iter().all(|v| *v == 0.0), "a failed image's zero row stays zero");
        // Unit vectors keep about unit length.
        let len = row(0).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((0.6..1.4).contains(&len), "{len}");
    }

    #[test]
    fn principal_directions_keep_what_varies() {
        // 200 rows in 64 dimensions: a common part (the first value), a spread along three others,
        // and a little noise everywhere. The principal sketch keeps the distances between the
        // (unit-length) rows; random signs keep them only on average.
        let dim = 64;
        let mut rng = SplitMix64(4);
        let rows: Vec<f32> = (0..200)
            .flat_map(|_| {
                let mut r: Vec<f32> = (0..dim).map(|_| 0.01 * (rng.next_f64() as f32 - 0.5)).collect();
                r[0] += 20.0;
                for v in &mut r[1..4] {
                    *v += 6.0 * (rng.next_f64() as f32 - 0.5);
                }
                r
            })
            .collect();
        let unit: Vec<f32> = rows
            .chunks_exact(dim)
            .flat_map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                r.iter().map(move |v| v / n)
            })
            .collect();
        let worst = |sketch: &[f32]| {
            let mut worst = 0f32;
            for i in 0..200 {
                for j in (i + 1)..200 {
                    let full = distance2(&unit[i * dim..(i + 1) * dim], &unit[j * dim..(j + 1) * dim]).sqrt();
                    let kept =
                        distance2(&sketch[i * SKETCH_DIM..(i + 1) * SKETCH_DIM], &sketch[j * SKETCH_DIM..(j + 1) * SKETCH_DIM]).sqrt();
                    worst = worst.max((kept - full).abs() / full);
                }
            }
            worst
        };
        let principal = Projection::principal(&rows, dim);
        assert_eq!(principal.apply(&rows), Projection::principal(&rows, dim).apply(&rows), "repeatable");
        let (kept, random) = (worst(&principal.apply(&rows)), worst(&Projection::random(dim).apply(&rows)));
        assert!(kept < 0.05, "principal directions: distances within {kept}");
        assert!(random > 2.0 * kept, "random signs: within {random}, principal {kept}");
        // Too few rows to fit: the random projection.
        assert_eq!(Projection::principal(&rows[..10 * dim], dim).apply(&rows[..dim]), Projection::random(dim).apply(&rows[..dim]));
        let zero = vec![0.0; dim];
        assert!(principal.apply(&zero).iter().all(|v| *v == 0.0), "a failed image's zero row stays zero");
    }
}
