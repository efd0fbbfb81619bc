//! Link settings for this package's binaries and tests that use libtorch (see binann-build).

fn main() {
    binann_build::link_libtorch();
}
