//! Strided tensors as torch describes them (a root storage, an offset, sizes and strides) and
//! copying them out as contiguous bytes, with every index checked so a corrupt file cannot make
//! the copy read out of bounds or allocate without limit.

use safetensors::Dtype;

/// Refuses absurd element counts before allocating for them (a corrupt header must not OOM us).
pub(crate) const MAX_STORAGE_BYTES: u64 = 8 << 30;

/// A storage persistent id: which root storage, its element type, and an optional view into it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    pub(crate) dtype: Dtype,
    pub(crate) root_key: String,
    /// Element offset of the view inside the root storage (0 without a view).
    pub(crate) view_offset: usize,
}

/// The arguments of `_rebuild_tensor_v2`, before the storage data is known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    pub(crate) storage: StorageRef,
    /// Element offset inside the (view) storage.
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) stride: Vec<usize>,
}

impl TensorRef {
    /// Copies this (possibly strided) tensor out of its root storage into contiguous bytes.
    /// Fails with a message when the sizes and strides reach past the storage, overflow, or
    /// describe more than [`MAX_STORAGE_BYTES`] (zero strides can repeat one element forever).
    pub(crate) fn gather(&self, storage: &[u8]) -> Result<Vec<u8>, String> {
        let elem = element_size(self.storage.dtype);
        let too_large = || format!("sizes {:?} with strides {:?} describe an implausible tensor", self.shape, self.stride);
        let numel = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(too_large)?;
        if numel == 0 {
            return Ok(Vec::new());
        }
        if numel.checked_mul(elem).is_none_or(|bytes| bytes as u64 > MAX_STORAGE_BYTES) {
            return Err(too_large());
        }
        let base = self.storage.view_offset.checked_add(self.offset).ok_or_else(too_large)?;
        let last = self
            .shape
            .iter()
            .zip(&self.stride)
            .try_fold(base, |at, (&n, &s)| at.checked_add((n - 1).checked_mul(s)?))
            .ok_or_else(too_large)?;
        if last.checked_add(1).and_then(|n| n.checked_mul(elem)).is_none_or(|end| end > storage.len()) {
            return Err(format!("reads element {last} of a storage holding {}", storage.len() / elem));
        }
        if self.is_contiguous() {
            return Ok(storage[base * elem..(base + numel) * elem].to_vec());
        }
        let mut out = Vec::with_capacity(numel * elem);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..numel {
            let at = base + index.iter().zip(&self.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&storage[at * elem..(at + 1) * elem]);
            for dim in (0..index.len()).rev() {
                index[dim] += 1;
                if index[dim] < self.shape[dim] {
                    break;
                }
                index[dim] = 0;
            }
        }
        Ok(out)
    }

    fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }
}

/// Bytes per element; every dtype a torch storage can have is at least a byte wide.
pub(crate) fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize().div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_bounds_strides_are_an_error() {
        let t = TensorRef {
            storage: StorageRef { dtype: Dtype::F32, root_key: "k".into(), view_offset: 0 },
            offset: 1,
            shape: vec![2, 3],
            stride: vec![3, 1],
        };
        assert!(t.gather(&[0u8; 24]).is_err());
        assert_eq!(t.gather(&[0u8; 28]).unwrap().len(), 24);
    }

    #[test]
    fn overflowing_or_endless_views_are_an_error() {
        let storage = StorageRef { dtype: Dtype::F32, root_key: "k".into(), view_offset: 0 };
        let view = |offset, shape: Vec<usize>, stride: Vec<usize>| TensorRef { storage: storage.clone(), offset, shape, stride };
        // Sizes whose product overflows, strides that reach past usize, offsets at the limit.
        assert!(view(0, vec![usize::MAX, 2], vec![1, 1]).gather(&[0u8; 16]).is_err());
        assert!(view(0, vec![2, 2], vec![usize::MAX, 1]).gather(&[0u8; 16]).is_err());
        assert!(view(usize::MAX, vec![1], vec![1]).gather(&[0u8; 16]).is_err());
        // A zero stride repeats one element: 2^40 of them would be 4 TiB out of 4 bytes.
        assert!(view(0, vec![1 << 40], vec![0]).gather(&[0u8; 4]).is_err());
        assert_eq!(view(0, vec![3], vec![0]).gather(&1f32.to_le_bytes()).unwrap(), [1f32.to_le_bytes(); 3].concat());
    }
}
