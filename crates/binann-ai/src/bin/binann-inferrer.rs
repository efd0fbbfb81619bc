//! `binann-inferrer`: see `--help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    binann_model::with_cpu_runtime_env();
    binann_ai::init_logging();
    match binann_ai::inferrer::run(binann_ai::inferrer::InferrerArgs::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("binann-inferrer: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
