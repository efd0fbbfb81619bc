//! binann-weights: the one-off conversion of torchvision's pretrained weights, run at setup
//! (`scripts/fetch-weights.sh`), so the runtime crates never carry a pickle parser. Pure Rust: no
//! libtorch, no Python torch.
//!
//! - [`convert`]: legacy (non-zip) `torch.save` pickle → safetensors
//!   ([`convert_legacy_torch_to_safetensors`]; [`read_legacy_state_dict`] parses without writing).
//! - [`error`]: [`Error`] and what it carries ([`ParseError`], [`PickleError`]).
//! - `torch_legacy` (private): the legacy file layout (header pickles, storage key list, raw
//!   storages) and torch's classes inside the pickle (storages, `_rebuild_tensor_v2`), read into
//!   [`NamedTensor`]s.
//! - `pickle` (private): the minimal pickle virtual machine and the Python values it produces.
//! - `tensor` (private): strided tensors over a storage, copied out contiguous with every index
//!   checked.
//!
//! Binary: `binann-convert-weights SRC DST`.

pub mod convert;
pub mod error;
mod pickle;
mod tensor;
mod torch_legacy;

pub use convert::{NamedTensor, convert_legacy_torch_to_safetensors, read_legacy_state_dict};
pub use error::{Error, ParseError, PickleError};
