//! A minimal pickle virtual machine for what `torch.save` writes, and the Python values it
//! produces ([`Value`]).
//!
//! Only the pickle opcodes `torch.save` emits (protocol 2, plus a few harmless extras) are
//! understood; anything else is reported as an error rather than guessed at. The VM knows no
//! torch classes: REDUCE and BINPERSID are handed to [`torch_legacy`], which turns storages and
//! `_rebuild_tensor_v2` calls into [`Value::Storage`] and [`Value::Tensor`].

use std::collections::HashMap;
use std::io::Read;

use crate::error::PickleError;
use crate::tensor::{StorageRef, TensorRef};
use crate::torch_legacy;

/// Returns a [`PickleError::Malformed`] with a formatted message.
macro_rules! malformed {
    ($($arg:tt)*) => {
        return Err($crate::error::PickleError::Malformed(format!($($arg)*)).into())
    };
}
pub(crate) use malformed;

/// Returns a [`PickleError::Unsupported`] with a formatted message.
macro_rules! unsupported {
    ($($arg:tt)*) => {
        return Err($crate::error::PickleError::Unsupported(format!($($arg)*)).into())
    };
}
pub(crate) use unsupported;

/// The subset of Python values a torch state_dict pickle produces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
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
    pub(crate) fn as_u128(&self) -> Option<u128> {
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

    pub(crate) fn as_usize(&self) -> Result<usize, PickleError> {
        match self {
            Value::Int(i) => usize::try_from(*i).map_err(|_| PickleError::Malformed(format!("negative size {i}"))),
            other => malformed!("expected an integer, found {other:?}"),
        }
    }

    pub(crate) fn as_usize_tuple(&self) -> Result<Vec<usize>, PickleError> {
        match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(Value::as_usize).collect(),
            other => malformed!("expected a tuple of integers, found {other:?}"),
        }
    }

    pub(crate) fn dict_get(&self, key: &str) -> Option<&Value> {
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
pub(crate) struct Unpickler<'a, R> {
    reader: &'a mut R,
    stack: Vec<StackItem>,
    memo: HashMap<u32, Value>,
}

impl<'a, R: Read> Unpickler<'a, R> {
    pub(crate) fn new(reader: &'a mut R) -> Self {
        Self { reader, stack: Vec::new(), memo: HashMap::new() }
    }

    pub(crate) fn load(mut self) -> Result<Value, PickleError> {
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
                    let result = torch_legacy::call(callable, args)?;
                    self.push(result);
                }
                b'b' => {
                    // BUILD sets object state; OrderedDict's `_metadata` (module versions) is
                    // irrelevant to the tensors, so the state is dropped.
                    self.pop_value()?;
                }
                b'Q' => {
                    let pid = self.pop_value()?;
                    let storage = torch_legacy::persistent_load(pid)?;
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
