//! binann-cli's library: the parts of the `binann` tools that other crates run in-process.
//!
//! - [`simulate`]: the simulated annotator behind `binann simulate`, which `binann-bench-recall`
//!   (crate binann-bench) drives directly, so its clock and the benchmark's are one.
//!
//! The rest of the tools (`inspect`, `demo-data`, `export`) live in the binary alone.

pub mod simulate;
