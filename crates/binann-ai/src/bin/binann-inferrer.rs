//! `binann-inferrer`: see `--help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    binann_model::with_cpu_runtime_env();
    binann_core::cli::main("binann-inferrer", "info", || binann_ai::inferrer::run(binann_ai::inferrer::InferrerArgs::parse()))
}
