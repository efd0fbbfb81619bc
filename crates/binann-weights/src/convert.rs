//! Conversion of legacy (pre-1.6, non-zip) `torch.save` files to safetensors, without Python.
//! Reading the legacy file is `torch_legacy`'s; this module writes what it read.

use std::collections::HashMap;
use std::path::Path;

use crate::error::Error;
pub use crate::torch_legacy::{NamedTensor, read_legacy_state_dict};

/// Converts a legacy `torch.save` file holding a state_dict into a safetensors file.
///
/// Tensors nested in sub-dicts are named with dot-joined keys; non-tensor values are skipped.
/// Views (storage offsets, non-contiguous strides, storage views) are materialised as contiguous
/// copies. The output is written atomically. Returns the number of tensors written.
pub fn convert_legacy_torch_to_safetensors(src: &Path, dst: &Path) -> Result<usize, Error> {
    let bytes = std::fs::read(src).map_err(|source| Error::Io { path: src.to_owned(), source })?;
    let tensors = read_legacy_state_dict(&bytes).map_err(|source| Error::Parse { path: src.to_owned(), source })?;
    let serialize_error = |source| Error::Serialize { path: dst.to_owned(), source };
    let views = tensors
        .iter()
        .map(|t| safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).map(|view| (t.name.clone(), view)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(serialize_error)?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let serialized = safetensors::tensor::serialize(views, Some(metadata)).map_err(serialize_error)?;
    binann_core::atomic::write_atomic(dst, &serialized)?;
    Ok(tensors.len())
}

#[cfg(test)]
mod tests {
    use safetensors::Dtype;

    use super::*;
    use crate::error::ParseError;
    use crate::torch_legacy::tests::{as_f32, tiny_legacy_file};

    #[test]
    fn round_trips_through_safetensors_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tiny.pth");
        let dst = dir.path().join("tiny.safetensors");
        std::fs::write(&src, tiny_legacy_file()).unwrap();
        assert_eq!(convert_legacy_torch_to_safetensors(&src, &dst).unwrap(), 4);

        let bytes = std::fs::read(&dst).unwrap();
        let loaded = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let transposed = loaded.tensor("a.transposed").unwrap();
        assert_eq!((transposed.dtype(), transposed.shape()), (Dtype::F32, &[3usize, 2][..]));
        assert_eq!(as_f32(transposed.data()), [0., 3., 1., 4., 2., 5.]);
        let count = loaded.tensor("b.count").unwrap();
        assert_eq!((count.dtype(), count.shape(), count.data()), (Dtype::I64, &[][..], &42i64.to_le_bytes()[..]));
        assert_eq!(as_f32(loaded.tensor("b.tail").unwrap().data()), [13., 14., 15.]);
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    }

    #[test]
    fn conversion_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pth");
        let err = convert_legacy_torch_to_safetensors(&missing, &dir.path().join("out.safetensors")).unwrap_err();
        assert!(matches!(&err, Error::Io { path, source } if *path == missing && source.kind() == std::io::ErrorKind::NotFound), "{err}");

        let zip = dir.path().join("new.pth");
        std::fs::write(&zip, b"PK\x03\x04rest").unwrap();
        let out = dir.path().join("new.safetensors");
        let err = convert_legacy_torch_to_safetensors(&zip, &out).unwrap_err();
        assert!(matches!(&err, Error::Parse { path, source: ParseError::ZipFormat } if *path == zip), "{err}");
        assert!(!out.exists(), "nothing is written for a file that does not parse");
    }
}
