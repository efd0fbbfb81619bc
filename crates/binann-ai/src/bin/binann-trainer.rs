//! `binann-trainer`: see `--help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    binann_model::with_cpu_runtime_env();
    binann_core::cli::main("binann-trainer", "info", || binann_ai::trainer::run(binann_ai::trainer::TrainerArgs::parse()))
}
