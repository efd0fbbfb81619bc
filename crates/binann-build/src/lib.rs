//! binann-build: what the build scripts of binann's libtorch crates share (a build-dependency only;
//! nothing here is linked into a binary).
//!
//! - [`link_libtorch`]: the link settings every binary and test that uses libtorch needs.
//!
//! Cargo applies a build script's `rustc-link-arg` to its own package's targets only, never to
//! its dependents', so each package with binaries or tests on libtorch (binann-model, binann-ai,
//! binann-bench) runs this from its own `build.rs`. It also reads libtorch's folder from
//! `DEP_TCH_LIBTORCH_LIB`, which cargo sets only for packages that depend on torch-sys directly:
//! those packages name torch-sys in their `[dependencies]` for that reason alone.

use std::path::Path;
use std::process::Command;

/// Emits the link settings for the calling package's binaries and tests: an rpath to libtorch's
/// folder, and libtorch_cuda forced in where it can load. Call it from `build.rs`; without
/// torch-sys as a direct dependency it does nothing.
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=BINANN_LINK_TORCH_CUDA");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rerun-if-changed={lib_dir}");
    // torch-sys gives the final binary no rpath; without this, running needs LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // Nothing references libtorch_cuda's symbols directly, so `--as-needed` would drop it and
    // CUDA would never register; force it in when it can actually load.
    if should_link_torch_cuda(&Path::new(&lib_dir).join("libtorch_cuda.so")) {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// `BINANN_LINK_TORCH_CUDA=1`/`0` forces the choice. Otherwise: only when libtorch_cuda.so and
/// all the CUDA libraries it needs are present. The PyPI torch wheel always ships
/// libtorch_cuda.so, but a CPU-only install (scripts/setup.sh) lacks cuBLAS, cuDNN, ...,
/// and linking it there would make every binary fail to start.
fn should_link_torch_cuda(torch_cuda: &Path) -> bool {
    match std::env::var("BINANN_LINK_TORCH_CUDA").as_deref() {
        Ok("1") => return true,
        Ok("0") => return false,
        _ => {}
    }
    if !torch_cuda.exists() {
        return false;
    }
    match Command::new("ldd").arg(torch_cuda).output() {
        Ok(out) if out.status.success() => !String::from_utf8_lossy(&out.stdout).contains("not found"),
        _ => false,
    }
}
