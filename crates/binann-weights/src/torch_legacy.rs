//! Torch's legacy (pre-1.6, non-zip) `torch.save` format, read into contiguous tensors.
//!
//! A legacy file is five pickles and a blob, back to back:
//! 1. the magic number `0x1950a86a20f9469cfc6c` (a pickled int),
//! 2. the protocol version (1001),
//! 3. system info (`{"little_endian": True, "type_sizes": {...}, ...}`),
//! 4. the object itself (here a state_dict); every storage in it is a *persistent id*
//!    `("storage", torch.FloatStorage, root_key, location, root_numel, view_metadata)` and every
//!    tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`,
//! 5. the list of root storage keys, in the order their data follows,
//!
//! then, for each key, a little-endian u64 element count followed by the raw elements.

use std::collections::HashMap;
use std::io::Read;

use safetensors::Dtype;

use crate::error::{ParseError, PickleError};
use crate::pickle::{Unpickler, Value, malformed, unsupported};
use crate::tensor::{MAX_STORAGE_BYTES, StorageRef, TensorRef, element_size};

/// `torch.serialization.MAGIC_NUMBER`.
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// `torch.serialization.PROTOCOL_VERSION`.
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

/// One tensor read from a legacy file, already made contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Dot-joined state_dict key, e.g. `features.0.0.weight`.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Size per dimension (empty for a 0-dim tensor).
    pub shape: Vec<usize>,
    /// Contiguous little-endian elements.
    pub data: Vec<u8>,
}

/// Parses a whole legacy torch file and returns its tensors in pickle order. Any byte string
/// gives a result or an error, never a panic, and allocates at most what the file's own
/// storages hold (each at most 8 GiB).
pub fn read_legacy_state_dict(bytes: &[u8]) -> Result<Vec<NamedTensor>, ParseError> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(ParseError::ZipFormat);
    }
    let mut cursor = std::io::Cursor::new(bytes);
    let mut load = |section| Unpickler::new(&mut cursor).load().map_err(|source| ParseError::Pickle { section, source });

    let magic = load("the magic number")?;
    if magic.as_u128() != Some(LEGACY_MAGIC) {
        return Err(ParseError::BadMagic(format!("{magic:?}")));
    }
    let protocol = load("the protocol version")?;
    if !matches!(protocol, Value::Int(LEGACY_PROTOCOL_VERSION)) {
        return Err(ParseError::UnsupportedVersion(format!("{protocol:?}")));
    }
    let sys_info = load("the system info")?;
    if let Some(Value::Bool(false)) = sys_info.dict_get("little_endian") {
        return Err(ParseError::BigEndian);
    }

    let root = load("the pickled object")?;
    let mut tensor_refs = Vec::new();
    collect_tensors(&root, "", &mut tensor_refs);
    if tensor_refs.is_empty() {
        return Err(ParseError::NoTensors);
    }

    let keys = load("the storage key list")?;
    let Value::List(keys) = keys else { return Err(ParseError::StorageKeys(format!("not a list: {keys:?}"))) };

    let dtype_of_key: HashMap<&str, Dtype> = tensor_refs.iter().map(|(_, t)| (t.storage.root_key.as_str(), t.storage.dtype)).collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::with_capacity(keys.len());
    for key in &keys {
        let Value::Str(key) = key else { return Err(ParseError::StorageKeys(format!("a key is not a string: {key:?}"))) };
        // Storages only referenced by non-tensor objects would have an unknown element size;
        // torch never writes those for state_dicts.
        let dtype = *dtype_of_key.get(key.as_str()).ok_or_else(|| ParseError::UnusedStorage { key: key.clone() })?;
        let mut count = [0u8; 8];
        cursor.read_exact(&mut count).map_err(|_| ParseError::StorageTruncated { key: key.clone(), expected_bytes: None })?;
        let nbytes = u64::from_le_bytes(count)
            .checked_mul(element_size(dtype) as u64)
            .filter(|&n| n <= MAX_STORAGE_BYTES)
            .ok_or_else(|| ParseError::StorageTooLarge { key: key.clone() })?;
        let start = cursor.position() as usize;
        let data = bytes
            .get(start..start + nbytes as usize)
            .ok_or_else(|| ParseError::StorageTruncated { key: key.clone(), expected_bytes: Some(nbytes) })?;
        cursor.set_position((start + nbytes as usize) as u64);
        storages.insert(key.clone(), data.to_vec());
    }

    tensor_refs
        .into_iter()
        .map(|(name, t)| {
            let Some(storage) = storages.get(&t.storage.root_key) else {
                return Err(ParseError::MissingStorage { tensor: name, key: t.storage.root_key });
            };
            let data = t.gather(storage).map_err(|problem| ParseError::BadTensor { tensor: name.clone(), problem })?;
            Ok(NamedTensor { name, dtype: t.storage.dtype, shape: t.shape, data })
        })
        .collect()
}

/// Walks (nested) dicts and collects tensors with dot-joined names, in insertion order.
fn collect_tensors(value: &Value, prefix: &str, out: &mut Vec<(String, TensorRef)>) {
    match value {
        Value::Tensor(t) => out.push((prefix.to_string(), t.clone())),
        Value::Dict(items) => {
            for (key, value) in items {
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                collect_tensors(value, &name, out);
            }
        }
        _ => {}
    }
}

/// Applies REDUCE: the handful of callables a state_dict uses; everything else is opaque.
pub(crate) fn call(callable: Value, args: Value) -> Result<Value, PickleError> {
    let Value::Global { module, name } = &callable else {
        return Ok(Value::Opaque);
    };
    let Value::Tuple(args) = args else { malformed!("REDUCE arguments are not a tuple") };
    Ok(match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Value::Dict(Vec::new()),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            if args.len() < 4 {
                malformed!("{name} with {} arguments", args.len());
            }
            let Value::Storage(storage) = &args[0] else {
                malformed!("{name}: first argument is not a storage: {:?}", args[0]);
            };
            let shape = args[2].as_usize_tuple()?;
            let stride = args[3].as_usize_tuple()?;
            if shape.len() != stride.len() {
                malformed!("{name}: size and stride ranks differ");
            }
            Value::Tensor(TensorRef { storage: storage.clone(), offset: args[1].as_usize()?, shape, stride })
        }
        // nn.Parameter wrapping a tensor: the tensor is what matters.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            let Some(tensor) = args.into_iter().next() else { malformed!("_rebuild_parameter without arguments") };
            tensor
        }
        _ => Value::Opaque,
    })
}

/// Resolves a BINPERSID: `("storage", storage_type, root_key, location, numel, view_metadata)`.
pub(crate) fn persistent_load(pid: Value) -> Result<Value, PickleError> {
    let Value::Tuple(items) = pid else { malformed!("persistent id is not a tuple: {pid:?}") };
    if items.len() < 5 || items[0] != Value::Str("storage".into()) {
        unsupported!("persistent id {items:?}");
    }
    let Value::Global { name: type_name, .. } = &items[1] else {
        malformed!("storage type is not a class: {:?}", items[1]);
    };
    let dtype = storage_dtype(type_name)?;
    let Value::Str(root_key) = &items[2] else { malformed!("storage key is not a string") };
    let view_offset = match items.get(5) {
        None | Some(Value::None) => 0,
        Some(Value::Tuple(view)) if view.len() == 3 => view[1].as_usize()?,
        Some(other) => unsupported!("storage view metadata {other:?}"),
    };
    Ok(Value::Storage(StorageRef { dtype, root_key: root_key.clone(), view_offset }))
}

fn storage_dtype(type_name: &str) -> Result<Dtype, PickleError> {
    Ok(match type_name {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        other => unsupported!("storage type torch.{other}"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes pickles the way legacy `torch.save` does, for building test fixtures.
    #[derive(Default)]
    pub(crate) struct PickleWriter {
        pub out: Vec<u8>,
    }

    impl PickleWriter {
        pub fn op(&mut self, bytes: &[u8]) -> &mut Self {
            self.out.extend_from_slice(bytes);
            self
        }
        pub fn proto(&mut self) -> &mut Self {
            self.op(&[0x80, 2])
        }
        pub fn stop(&mut self) -> &mut Self {
            self.op(b".")
        }
        pub fn int(&mut self, v: u32) -> &mut Self {
            match v {
                0..=0xff => self.op(&[b'K', v as u8]),
                0x100..=0xffff => self.op(b"M").op(&(v as u16).to_le_bytes()),
                _ => self.op(b"J").op(&(v as i32).to_le_bytes()),
            }
        }
        pub fn str(&mut self, s: &str) -> &mut Self {
            self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
        }
        pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
            self.op(b"c").op(module.as_bytes()).op(b"\n").op(name.as_bytes()).op(b"\n")
        }
        pub fn tuple_of_ints(&mut self, values: &[u32]) -> &mut Self {
            self.op(b"(");
            for &v in values {
                self.int(v);
            }
            self.op(b"t")
        }
        /// Pushes `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
        #[allow(clippy::too_many_arguments)]
        pub fn tensor(
            &mut self,
            storage_type: &str,
            key: &str,
            storage_numel: u32,
            view: Option<(&str, u32, u32)>,
            offset: u32,
            size: &[u32],
            stride: &[u32],
        ) -> &mut Self {
            self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
            self.op(b"(").str("storage").global("torch", storage_type).str(key).str("cpu");
            self.int(storage_numel);
            match view {
                None => self.op(b"N"),
                Some((view_key, view_offset, view_size)) => self.op(b"(").str(view_key).int(view_offset).int(view_size).op(b"t"),
            };
            self.op(b"tQ").int(offset).tuple_of_ints(size).tuple_of_ints(stride);
            self.op(&[0x89]).global("collections", "OrderedDict").op(b")R").op(b"tR")
        }
    }

    /// Legacy header: magic, protocol version and sys info pickles.
    pub(crate) fn legacy_header() -> Vec<u8> {
        let mut w = PickleWriter::default();
        let magic = LEGACY_MAGIC.to_le_bytes();
        w.proto().op(&[0x8a, 10]).op(&magic[..10]).stop();
        w.proto().op(b"M").op(&1001u16.to_le_bytes()).stop();
        w.proto().op(b"}(").str("protocol_version").int(1001);
        w.str("little_endian").op(&[0x88]).op(b"u").stop();
        w.out
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A tiny state_dict exercising contiguous, transposed, offset, storage-view and 0-dim cases.
    pub(crate) fn tiny_legacy_file() -> Vec<u8> {
        let mut file = legacy_header();
        let mut w = PickleWriter::default();
        w.proto().global("collections", "OrderedDict").op(b")R").op(b"(");
        // "a.weight": 2x3 contiguous over storage A = [0, 1, 2, 3, 4, 5].
        w.str("a.weight").tensor("FloatStorage", "A", 6, None, 0, &[2, 3], &[3, 1]);
        // "a.transposed": the 3x2 transpose of A (non-contiguous strides).
        w.str("a.transposed").tensor("FloatStorage", "A", 6, None, 0, &[3, 2], &[1, 3]);
        // "b.tail": elements 1..4 of storage B, via a storage view at 2 plus tensor offset 1.
        w.str("b.tail").tensor("FloatStorage", "B", 8, Some(("Bview", 2, 5)), 1, &[3], &[1]);
        // "b.count": a 0-dim int64 tensor, like BatchNorm's num_batches_tracked.
        w.str("b.count").tensor("LongStorage", "C", 1, None, 0, &[], &[]);
        w.op(b"u").op(b"}").op(b"b").stop();
        file.extend(w.out);

        let mut keys = PickleWriter::default();
        keys.proto().op(b"(").str("A").str("B").str("C").op(b"l").stop();
        file.extend(keys.out);

        file.extend(6u64.to_le_bytes());
        file.extend(f32_bytes(&[0., 1., 2., 3., 4., 5.]));
        file.extend(8u64.to_le_bytes());
        file.extend(f32_bytes(&[10., 11., 12., 13., 14., 15., 16., 17.]));
        file.extend(1u64.to_le_bytes());
        file.extend(42i64.to_le_bytes());
        file
    }

    pub(crate) fn as_f32(data: &[u8]) -> Vec<f32> {
        data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn parses_views_strides_and_scalars() {
        let tensors = read_legacy_state_dict(&tiny_legacy_file()).unwrap();
        let names: Vec<_> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a.weight", "a.transposed", "b.tail", "b.count"]);

        assert_eq!(tensors[0].shape, [2, 3]);
        assert_eq!(as_f32(&tensors[0].data), [0., 1., 2., 3., 4., 5.]);
        assert_eq!(tensors[1].shape, [3, 2]);
        assert_eq!(as_f32(&tensors[1].data), [0., 3., 1., 4., 2., 5.]);
        assert_eq!(as_f32(&tensors[2].data), [13., 14., 15.]);
        assert_eq!(tensors[3].dtype, Dtype::I64);
        assert!(tensors[3].shape.is_empty());
        assert_eq!(tensors[3].data, 42i64.to_le_bytes());
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let file = tiny_legacy_file();
        let truncated = read_legacy_state_dict(&file[..file.len() - 3]).unwrap_err();
        assert!(matches!(&truncated, ParseError::StorageTruncated { key, expected_bytes: Some(8) } if key == "C"), "{truncated}");
        let zip = read_legacy_state_dict(b"PK\x03\x04rest").unwrap_err();
        assert!(matches!(zip, ParseError::ZipFormat), "{zip}");
        let garbage = read_legacy_state_dict(b"\x80\x02K\x05.").unwrap_err();
        assert!(matches!(&garbage, ParseError::BadMagic(found) if found == "Int(5)"), "{garbage}");
        let cut_pickle = read_legacy_state_dict(&file[..20]).unwrap_err();
        assert!(matches!(cut_pickle, ParseError::Pickle { source: PickleError::Truncated, .. }), "{cut_pickle}");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_bytes_are_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
                prop_assert!(read_legacy_state_dict(&bytes).is_err());
            }

            #[test]
            fn arbitrary_bytes_after_a_valid_header_are_refused(tail in prop::collection::vec(any::<u8>(), 0..1024)) {
                // Past the three header pickles, so the bytes reach the state_dict parser.
                let mut file = legacy_header();
                file.extend(tail);
                prop_assert!(read_legacy_state_dict(&file).is_err());
            }

            #[test]
            fn every_truncation_of_a_real_file_is_refused(cut in 0usize..100_000) {
                let file = tiny_legacy_file();
                let cut = cut % file.len();
                let err = read_legacy_state_dict(&file[..cut]).unwrap_err();
                // Cut inside a pickle or inside the storages: either way it says so.
                prop_assert!(
                    matches!(err, ParseError::Pickle { source: PickleError::Truncated, .. } | ParseError::StorageTruncated { .. }),
                    "cut at {}: {}", cut, err
                );
            }

            #[test]
            fn corrupted_bytes_of_a_real_file_never_panic(at in 0usize..100_000, byte in any::<u8>()) {
                // Any one byte replaced: an error, or tensors within the file's own data.
                let mut file = tiny_legacy_file();
                let at = at % file.len();
                file[at] = byte;
                if let Ok(tensors) = read_legacy_state_dict(&file) {
                    let bytes: usize = tensors.iter().map(|t| t.data.len()).sum();
                    prop_assert!(bytes <= 4 * file.len(), "{} bytes of tensors from a {}-byte file", bytes, file.len());
                }
            }
        }
    }
}
