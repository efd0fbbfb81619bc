//! binann-weights: the one-off conversion of torchvision's pretrained weights, run at setup
//! (`scripts/fetch-weights.sh`), so the runtime crates never carry a pickle parser. Pure Rust: no
//! libtorch, no Python torch.
//!
//! - [`convert`]: legacy (non-zip) `torch.save` pickle → safetensors
//!   ([`convert_legacy_torch_to_safetensors`]; [`read_legacy_state_dict`] parses without writing).
//! - [`error`]: [`Error`] and what it carries ([`ParseError`], [`PickleError`]).
//!
//! Binary: `binann-convert-weights SRC DST`.

pub mod convert;
pub mod error;

pub use convert::{NamedTensor, convert_legacy_torch_to_safetensors, read_legacy_state_dict};
pub use error::{Error, ParseError, PickleError};
