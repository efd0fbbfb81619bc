//! `binann-trainer`: see `--help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    binann_model::with_cpu_runtime_env();
    binann_ai::init_logging();
    match binann_ai::trainer::run(binann_ai::trainer::TrainerArgs::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("binann-trainer: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
