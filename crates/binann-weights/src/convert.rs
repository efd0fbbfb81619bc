//! Conversion of legacy (pre-1.6, non-zip) `torch.save` files to safetensors, without Python.
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
//!
//! Only the pickle opcodes `torch.save` emits (protocol 2, plus a few harmless extras) are
//! understood; anything else is reported as an error rather than guessed at.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use safetensors::Dtype;

use crate::error::{Error, ParseError, PickleError};

type Result<T, E = ParseError> = std::result::Result<T, E>;

/// Returns a [`PickleError::Malformed`] with a formatted message.
macro_rules! malformed {
    ($($arg:tt)*) => {
        return Err(PickleError::Malformed(format!($($arg)*)).into())
    };
}

/// Returns a [`PickleError::Unsupported`] with a formatted message.
macro_rules! unsupported {
    ($($arg:tt)*) => {
        return Err(PickleError::Unsupported(format!($($arg)*)).into())
    };
}

/// `torch.serialization.MAGIC_NUMBER`.
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// `torch.serialization.PROTOCOL_VERSION`.
const LEGACY_PROTOCOL_VERSION: i64 = 1001;
/// Refuses absurd element counts before allocating for them (a corrupt header must not OOM us).
const MAX_STORAGE_BYTES: u64 = 8 << 30;

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
pub fn read_legacy_state_dict(bytes: &[u8]) -> Result<Vec<NamedTensor>> {
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

/// A storage persistent id: which root storage, its element type, and an optional view into it.
#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    dtype: Dtype,
    root_key: String,
    /// Element offset of the view inside the root storage (0 without a view).
    view_offset: usize,
}

/// The arguments of `_rebuild_tensor_v2`, before the storage data is known.
#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: StorageRef,
    /// Element offset inside the (view) storage.
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    /// Copies this (possibly strided) tensor out of its root storage into contiguous bytes.
    /// Fails with a message when the sizes and strides reach past the storage, overflow, or
    /// describe more than [`MAX_STORAGE_BYTES`] (zero strides can repeat one element forever).
    fn gather(&self, storage: &[u8]) -> Result<Vec<u8>, String> {
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

/// The subset of Python values a torch state_dict pickle produces.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64, as little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Insertion-ordered, like Python dicts and `OrderedDict`.
    Dict(Vec<(Value, Value)>),
    Global {
        module: String,
        name: String,
    },
    Storage(StorageRef),
    Tensor(TensorRef),
    /// The result of calling something we do not model; kept so unrelated parts still parse.
    Opaque,
}

impl Value {
    fn as_u128(&self) -> Option<u128> {
        match self {
            Value::Int(i) => u128::try_from(*i).ok(),
            Value::BigInt(bytes) if bytes.len() <= 16 && bytes.last().is_none_or(|b| b & 0x80 == 0) => {
                let mut le = [0u8; 16];
                le[..bytes.len()].copy_from_slice(bytes);
                Some(u128::from_le_bytes(le))
            }
            _ => None,
        }
    }

    fn as_usize(&self) -> Result<usize, PickleError> {
        match self {
            Value::Int(i) => usize::try_from(*i).map_err(|_| PickleError::Malformed(format!("negative size {i}"))),
            other => malformed!("expected an integer, found {other:?}"),
        }
    }

    fn as_usize_tuple(&self) -> Result<Vec<usize>, PickleError> {
        match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(Value::as_usize).collect(),
            other => malformed!("expected a tuple of integers, found {other:?}"),
        }
    }

    fn dict_get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Stack items: values, plus the MARK sentinel that only the VM itself sees.
#[derive(Debug)]
enum StackItem {
    Mark,
    Value(Value),
}

/// A minimal pickle virtual machine for what `torch.save` writes.
struct Unpickler<'a, R> {
    reader: &'a mut R,
    stack: Vec<StackItem>,
    memo: HashMap<u32, Value>,
}

impl<'a, R: Read> Unpickler<'a, R> {
    fn new(reader: &'a mut R) -> Self {
        Self { reader, stack: Vec::new(), memo: HashMap::new() }
    }

    fn load(mut self) -> Result<Value, PickleError> {
        loop {
            let opcode = self.read_u8()?;
            match opcode {
                0x80 => {
                    let protocol = self.read_u8()?;
                    if protocol > 5 {
                        unsupported!("pickle protocol {protocol}");
                    }
                }
                0x95 => {
                    self.read_bytes(8)?; // FRAME: framing is irrelevant when reading it all
                }
                b'.' => return self.pop_value(),
                b'(' => self.stack.push(StackItem::Mark),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.read_array()?);
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.read_u8()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.read_array()?);
                    self.push(Value::Int(v.into()));
                }
                0x8a => {
                    let len = self.read_u8()? as usize;
                    let bytes = self.read_bytes(len)?;
                    self.push(decode_long(bytes));
                }
                0x8b => {
                    let len = u32::from_le_bytes(self.read_array()?) as usize;
                    if len > 1 << 16 {
                        unsupported!("LONG4 of {len} bytes");
                    }
                    let bytes = self.read_bytes(len)?;
                    self.push(decode_long(bytes));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.read_array()?);
                    self.push(Value::Float(v));
                }
                b'X' => {
                    let len = u32::from_le_bytes(self.read_array()?) as usize;
                    let s = self.read_string(len)?;
                    self.push(Value::Str(s));
                }
                0x8c => {
                    let len = self.read_u8()? as usize;
                    let s = self.read_string(len)?;
                    self.push(Value::Str(s));
                }
                b'U' => {
                    // SHORT_BINSTRING: Python 2 str, decoded as latin-1 like `encoding="latin1"`.
                    let len = self.read_u8()? as usize;
                    let bytes = self.read_bytes(len)?;
                    self.push(Value::Str(bytes.iter().map(|&b| b as char).collect()));
                }
                b'T' => {
                    let len = u32::from_le_bytes(self.read_array()?) as usize;
                    let bytes = self.read_bytes(len)?;
                    self.push(Value::Str(bytes.iter().map(|&b| b as char).collect()));
                }
                b'C' => {
                    let len = self.read_u8()? as usize;
                    let bytes = self.read_bytes(len)?;
                    self.push(Value::Bytes(bytes));
                }
                b'B' => {
                    let len = u32::from_le_bytes(self.read_array()?) as usize;
                    let bytes = self.read_bytes(len)?;
                    self.push(Value::Bytes(bytes));
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b'}' => self.push(Value::Dict(Vec::new())),
                b't' => {
                    let items = self.pop_to_mark()?;
                    self.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_to_mark()?;
                    self.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_to_mark()?;
                    let dict = pairs(items)?;
                    self.push(Value::Dict(dict));
                }
                0x85..=0x87 => {
                    let n = (opcode - 0x84) as usize;
                    let mut items = (0..n).map(|_| self.pop_value()).collect::<Result<Vec<_>, _>>()?;
                    items.reverse();
                    self.push(Value::Tuple(items));
                }
                b'a' => {
                    let item = self.pop_value()?;
                    self.top_mut()?.list_extend(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_to_mark()?;
                    self.top_mut()?.list_extend(items)?;
                }
                b's' => {
                    let value = self.pop_value()?;
                    let key = self.pop_value()?;
                    self.top_mut()?.dict_extend(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_to_mark()?;
                    let items = pairs(items)?;
                    self.top_mut()?.dict_extend(items)?;
                }
                b'q' => {
                    let index = self.read_u8()?.into();
                    self.memoize(index)?;
                }
                b'r' => {
                    let index = u32::from_le_bytes(self.read_array()?);
                    self.memoize(index)?;
                }
                0x94 => {
                    let index = self.memo.len() as u32;
                    self.memoize(index)?;
                }
                b'h' => {
                    let index = self.read_u8()?.into();
                    self.push_memo(index)?;
                }
                b'j' => {
                    let index = u32::from_le_bytes(self.read_array()?);
                    self.push_memo(index)?;
                }
                b'c' => {
                    let module = self.read_line()?;
                    let name = self.read_line()?;
                    self.push(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop_value()?;
                    let module = self.pop_value()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        malformed!("STACK_GLOBAL with non-string operands");
                    };
                    self.push(Value::Global { module, name });
                }
                b'R' | 0x81 => {
                    let args = self.pop_value()?;
                    let callable = self.pop_value()?;
                    let result = call(callable, args)?;
                    self.push(result);
                }
                b'b' => {
                    // BUILD sets object state; OrderedDict's `_metadata` (module versions) is
                    // irrelevant to the tensors, so the state is dropped.
                    self.pop_value()?;
                }
                b'Q' => {
                    let pid = self.pop_value()?;
                    let storage = persistent_load(pid)?;
                    self.push(storage);
                }
                b'0' => {
                    if self.stack.pop().is_none() {
                        malformed!("POP on an empty stack");
                    }
                }
                b'1' => {
                    self.pop_to_mark()?;
                }
                b'2' => {
                    let top = self.top_mut()?.clone();
                    self.push(top);
                }
                other => unsupported!("pickle opcode 0x{other:02x}"),
            }
        }
    }

    fn push(&mut self, value: Value) {
        self.stack.push(StackItem::Value(value));
    }

    fn pop_value(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(StackItem::Value(v)) => Ok(v),
            Some(StackItem::Mark) => malformed!("unexpected MARK on the pickle stack"),
            None => malformed!("pickle stack underflow"),
        }
    }

    fn top_mut(&mut self) -> Result<&mut Value, PickleError> {
        match self.stack.last_mut() {
            Some(StackItem::Value(v)) => Ok(v),
            _ => malformed!("pickle stack has no value on top"),
        }
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(mark) = self.stack.iter().rposition(|item| matches!(item, StackItem::Mark)) else {
            malformed!("no MARK on the pickle stack");
        };
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|item| match item {
                StackItem::Value(v) => v,
                StackItem::Mark => unreachable!("rposition found the last mark"),
            })
            .collect())
    }

    fn memoize(&mut self, index: u32) -> Result<(), PickleError> {
        let top = self.top_mut()?.clone();
        self.memo.insert(index, top);
        Ok(())
    }

    fn push_memo(&mut self, index: u32) -> Result<(), PickleError> {
        let Some(value) = self.memo.get(&index).cloned() else { malformed!("memo {index} unset") };
        self.push(value);
        Ok(())
    }

    fn read_u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.read_array::<1>()?[0])
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut buf = [0u8; N];
        self.reader.read_exact(&mut buf).map_err(|_| PickleError::Truncated)?;
        Ok(buf)
    }

    /// Reads `len` bytes, allocating only as much as is actually there: a corrupt length must
    /// not reserve a gigabyte before finding the file is shorter.
    fn read_bytes(&mut self, len: usize) -> Result<Vec<u8>, PickleError> {
        if len > 1 << 30 {
            unsupported!("pickle item of {len} bytes");
        }
        let mut buf = Vec::new();
        (&mut *self.reader).take(len as u64).read_to_end(&mut buf).map_err(|_| PickleError::Truncated)?;
        if buf.len() < len {
            return Err(PickleError::Truncated);
        }
        Ok(buf)
    }

    fn read_string(&mut self, len: usize) -> Result<String, PickleError> {
        String::from_utf8(self.read_bytes(len)?).map_err(|_| PickleError::Malformed("invalid UTF-8 in pickle string".into()))
    }

    fn read_line(&mut self) -> Result<String, PickleError> {
        let mut line = Vec::new();
        loop {
            match self.read_u8()? {
                b'\n' => break,
                byte => line.push(byte),
            }
            if line.len() > 1024 {
                malformed!("overlong GLOBAL name");
            }
        }
        String::from_utf8(line).map_err(|_| PickleError::Malformed("invalid UTF-8 in GLOBAL name".into()))
    }
}

impl Value {
    fn list_extend(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        match self {
            Value::List(list) => list.extend(items),
            // Appending to something we did not model (e.g. a custom class) is harmless.
            Value::Opaque => {}
            other => malformed!("APPEND to a non-list {other:?}"),
        }
        Ok(())
    }

    fn dict_extend(&mut self, items: Vec<(Value, Value)>) -> Result<(), PickleError> {
        match self {
            Value::Dict(dict) => {
                for (key, value) in items {
                    match dict.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => dict.push((key, value)),
                    }
                }
            }
            Value::Opaque => {}
            other => malformed!("SETITEM on a non-dict {other:?}"),
        }
        Ok(())
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        malformed!("odd number of items for a dict");
    }
    let mut items = items.into_iter();
    Ok(std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect())
}

fn decode_long(bytes: Vec<u8>) -> Value {
    if bytes.len() <= 8 {
        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
        let mut le = [fill; 8];
        le[..bytes.len()].copy_from_slice(&bytes);
        Value::Int(i64::from_le_bytes(le))
    } else {
        Value::BigInt(bytes)
    }
}

/// Applies REDUCE: the handful of callables a state_dict uses; everything else is opaque.
fn call(callable: Value, args: Value) -> Result<Value, PickleError> {
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
fn persistent_load(pid: Value) -> Result<Value, PickleError> {
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

/// Bytes per element; every dtype a torch storage can have is at least a byte wide.
fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize().div_ceil(8)
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

    fn as_f32(data: &[u8]) -> Vec<f32> {
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
