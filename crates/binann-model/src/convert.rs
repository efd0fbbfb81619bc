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
use std::io::{Read, Seek};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use safetensors::Dtype;

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
pub fn convert_legacy_torch_to_safetensors(src: &Path, dst: &Path) -> Result<usize> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let tensors = read_legacy_state_dict(&bytes).with_context(|| format!("parsing legacy torch file {}", src.display()))?;
    let views = tensors
        .iter()
        .map(|t| safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).map(|view| (t.name.clone(), view)))
        .collect::<Result<Vec<_>, _>>()
        .context("building safetensors views")?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let serialized = safetensors::tensor::serialize(views, Some(metadata)).context("serializing safetensors")?;
    binann_core::atomic::write_atomic(dst, &serialized)?;
    Ok(tensors.len())
}

/// One tensor read from a legacy file, already made contiguous.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NamedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Contiguous little-endian elements.
    pub data: Vec<u8>,
}

/// Parses a whole legacy torch file and returns its tensors in pickle order.
pub(crate) fn read_legacy_state_dict(bytes: &[u8]) -> Result<Vec<NamedTensor>> {
    if bytes.starts_with(b"PK\x03\x04") {
        bail!("this is a zip-format torch file (torch >= 1.6); only the legacy format is supported");
    }
    let mut cursor = std::io::Cursor::new(bytes);

    let magic = Unpickler::new(&mut cursor).load().context("reading the magic number")?;
    ensure!(magic.as_u128() == Some(LEGACY_MAGIC), "not a legacy torch file (bad magic number {magic:?})");
    let protocol = Unpickler::new(&mut cursor).load().context("reading the protocol version")?;
    ensure!(matches!(protocol, Value::Int(LEGACY_PROTOCOL_VERSION)), "unsupported legacy protocol version {protocol:?}");
    let sys_info = Unpickler::new(&mut cursor).load().context("reading the system info")?;
    if let Some(Value::Bool(false)) = sys_info.dict_get("little_endian") {
        bail!("big-endian torch files are not supported");
    }

    let root = Unpickler::new(&mut cursor).load().context("reading the pickled object")?;
    let mut tensor_refs = Vec::new();
    collect_tensors(&root, "", &mut tensor_refs);
    ensure!(!tensor_refs.is_empty(), "the file holds no tensors");

    let keys = Unpickler::new(&mut cursor).load().context("reading the storage key list")?;
    let Value::List(keys) = keys else { bail!("storage key list is not a list: {keys:?}") };

    let dtype_of_key: HashMap<&str, Dtype> = tensor_refs.iter().map(|(_, t)| (t.storage.root_key.as_str(), t.storage.dtype)).collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::with_capacity(keys.len());
    for key in &keys {
        let Value::Str(key) = key else { bail!("storage key is not a string: {key:?}") };
        // Storages only referenced by non-tensor objects would have an unknown element size;
        // torch never writes those for state_dicts.
        let dtype = *dtype_of_key.get(key.as_str()).with_context(|| format!("storage {key} is not used by any tensor"))?;
        let mut count = [0u8; 8];
        cursor.read_exact(&mut count).with_context(|| format!("storage {key}: truncated header"))?;
        let nbytes = u64::from_le_bytes(count)
            .checked_mul(element_size(dtype) as u64)
            .filter(|&n| n <= MAX_STORAGE_BYTES)
            .with_context(|| format!("storage {key}: implausible size"))?;
        let start = cursor.position() as usize;
        let data = bytes
            .get(start..start + nbytes as usize)
            .with_context(|| format!("storage {key}: truncated data ({nbytes} bytes expected)"))?;
        cursor.seek(std::io::SeekFrom::Current(nbytes as i64))?;
        storages.insert(key.clone(), data.to_vec());
    }

    tensor_refs
        .into_iter()
        .map(|(name, t)| {
            let storage =
                storages.get(&t.storage.root_key).with_context(|| format!("{name}: storage {} has no data", t.storage.root_key))?;
            let data = t.gather(storage).with_context(|| format!("tensor {name}"))?;
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
    fn gather(&self, storage: &[u8]) -> Result<Vec<u8>> {
        let elem = element_size(self.storage.dtype);
        let numel: usize = self.shape.iter().product();
        if numel == 0 {
            return Ok(Vec::new());
        }
        let base = self.storage.view_offset + self.offset;
        let last = base + self.shape.iter().zip(&self.stride).map(|(&n, &s)| (n - 1) * s).sum::<usize>();
        ensure!((last + 1) * elem <= storage.len(), "reads element {last} of a storage holding {}", storage.len() / elem);
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

    fn as_usize(&self) -> Result<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).with_context(|| format!("negative size {i}")),
            other => bail!("expected an integer, found {other:?}"),
        }
    }

    fn as_usize_tuple(&self) -> Result<Vec<usize>> {
        match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(Value::as_usize).collect(),
            other => bail!("expected a tuple of integers, found {other:?}"),
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

    fn load(mut self) -> Result<Value> {
        loop {
            let opcode = self.read_u8()?;
            match opcode {
                0x80 => {
                    let protocol = self.read_u8()?;
                    ensure!(protocol <= 5, "unsupported pickle protocol {protocol}");
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
                    ensure!(len <= 1 << 16, "LONG4 of {len} bytes");
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
                    let mut items = (0..n).map(|_| self.pop_value()).collect::<Result<Vec<_>>>()?;
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
                        bail!("STACK_GLOBAL with non-string operands");
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
                    self.stack.pop().context("POP on an empty stack")?;
                }
                b'1' => {
                    self.pop_to_mark()?;
                }
                b'2' => {
                    let top = self.top_mut()?.clone();
                    self.push(top);
                }
                other => bail!("unsupported pickle opcode 0x{other:02x}"),
            }
        }
    }

    fn push(&mut self, value: Value) {
        self.stack.push(StackItem::Value(value));
    }

    fn pop_value(&mut self) -> Result<Value> {
        match self.stack.pop() {
            Some(StackItem::Value(v)) => Ok(v),
            Some(StackItem::Mark) => bail!("unexpected MARK on the pickle stack"),
            None => bail!("pickle stack underflow"),
        }
    }

    fn top_mut(&mut self) -> Result<&mut Value> {
        match self.stack.last_mut() {
            Some(StackItem::Value(v)) => Ok(v),
            _ => bail!("pickle stack has no value on top"),
        }
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.stack.iter().rposition(|item| matches!(item, StackItem::Mark)).context("no MARK on the pickle stack")?;
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

    fn memoize(&mut self, index: u32) -> Result<()> {
        let top = self.top_mut()?.clone();
        self.memo.insert(index, top);
        Ok(())
    }

    fn push_memo(&mut self, index: u32) -> Result<()> {
        let value = self.memo.get(&index).with_context(|| format!("memo {index} unset"))?.clone();
        self.push(value);
        Ok(())
    }

    fn read_u8(&mut self) -> Result<u8> {
        Ok(self.read_array::<1>()?[0])
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.reader.read_exact(&mut buf).context("truncated pickle")?;
        Ok(buf)
    }

    fn read_bytes(&mut self, len: usize) -> Result<Vec<u8>> {
        ensure!(len <= 1 << 30, "pickle item of {len} bytes");
        let mut buf = vec![0u8; len];
        self.reader.read_exact(&mut buf).context("truncated pickle")?;
        Ok(buf)
    }

    fn read_string(&mut self, len: usize) -> Result<String> {
        String::from_utf8(self.read_bytes(len)?).context("invalid UTF-8 in pickle string")
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        loop {
            match self.read_u8()? {
                b'\n' => break,
                byte => line.push(byte),
            }
            ensure!(line.len() <= 1024, "overlong GLOBAL name");
        }
        String::from_utf8(line).context("invalid UTF-8 in GLOBAL name")
    }
}

impl Value {
    fn list_extend(&mut self, items: Vec<Value>) -> Result<()> {
        match self {
            Value::List(list) => list.extend(items),
            // Appending to something we did not model (e.g. a custom class) is harmless.
            Value::Opaque => {}
            other => bail!("APPEND to a non-list {other:?}"),
        }
        Ok(())
    }

    fn dict_extend(&mut self, items: Vec<(Value, Value)>) -> Result<()> {
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
            other => bail!("SETITEM on a non-dict {other:?}"),
        }
        Ok(())
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    ensure!(items.len().is_multiple_of(2), "odd number of items for a dict");
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
fn call(callable: Value, args: Value) -> Result<Value> {
    let Value::Global { module, name } = &callable else {
        return Ok(Value::Opaque);
    };
    let Value::Tuple(args) = args else { bail!("REDUCE arguments are not a tuple") };
    Ok(match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Value::Dict(Vec::new()),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            ensure!(args.len() >= 4, "{name} with {} arguments", args.len());
            let Value::Storage(storage) = &args[0] else {
                bail!("{name}: first argument is not a storage: {:?}", args[0]);
            };
            let shape = args[2].as_usize_tuple()?;
            let stride = args[3].as_usize_tuple()?;
            ensure!(shape.len() == stride.len(), "{name}: size and stride ranks differ");
            Value::Tensor(TensorRef { storage: storage.clone(), offset: args[1].as_usize()?, shape, stride })
        }
        // nn.Parameter wrapping a tensor: the tensor is what matters.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            args.into_iter().next().context("_rebuild_parameter without arguments")?
        }
        _ => Value::Opaque,
    })
}

/// Resolves a BINPERSID: `("storage", storage_type, root_key, location, numel, view_metadata)`.
fn persistent_load(pid: Value) -> Result<Value> {
    let Value::Tuple(items) = pid else { bail!("persistent id is not a tuple: {pid:?}") };
    ensure!(items.len() >= 5 && items[0] == Value::Str("storage".into()), "unsupported persistent id {items:?}");
    let Value::Global { name: type_name, .. } = &items[1] else {
        bail!("storage type is not a class: {:?}", items[1]);
    };
    let dtype = storage_dtype(type_name)?;
    let Value::Str(root_key) = &items[2] else { bail!("storage key is not a string") };
    let view_offset = match items.get(5) {
        None | Some(Value::None) => 0,
        Some(Value::Tuple(view)) if view.len() == 3 => view[1].as_usize()?,
        Some(other) => bail!("unsupported storage view metadata {other:?}"),
    };
    Ok(Value::Storage(StorageRef { dtype, root_key: root_key.clone(), view_offset }))
}

/// Bytes per element; every dtype a torch storage can have is at least a byte wide.
fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize().div_ceil(8)
}

fn storage_dtype(type_name: &str) -> Result<Dtype> {
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
        other => bail!("unsupported storage type torch.{other}"),
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

        let loaded: HashMap<_, _> = tch::Tensor::read_safetensors(&dst).unwrap().into_iter().collect();
        let transposed = &loaded["a.transposed"];
        assert_eq!(transposed.size(), [3, 2]);
        let expected = tch::Tensor::from_slice(&[0f32, 1., 2., 3., 4., 5.]).view([2, 3]).tr();
        assert!(transposed.equal(&expected));
        assert_eq!(loaded["b.count"].int64_value(&[]), 42);
        assert_eq!(Vec::<f32>::try_from(&loaded["b.tail"]).unwrap(), [13., 14., 15.]);
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let file = tiny_legacy_file();
        let truncated = read_legacy_state_dict(&file[..file.len() - 3]).unwrap_err();
        assert!(format!("{truncated:#}").contains("truncated"), "{truncated:#}");
        let zip = read_legacy_state_dict(b"PK\x03\x04rest").unwrap_err();
        assert!(zip.to_string().contains("zip-format"));
        let garbage = read_legacy_state_dict(b"\x80\x02K\x05.").unwrap_err();
        assert!(garbage.to_string().contains("magic"), "{garbage:#}");
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
}
