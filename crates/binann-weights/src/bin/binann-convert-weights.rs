//! `binann-convert-weights SRC DST`: converts a legacy `torch.save` state_dict (`.pth`) into a
//! safetensors file. Used by `scripts/fetch-weights.sh`.

use std::path::PathBuf;

use clap::Parser;

/// Converts a legacy (pre-1.6, non-zip) `torch.save` state_dict into a safetensors file,
/// written atomically. Tensors in nested dicts get dot-joined names.
#[derive(Debug, Parser)]
#[command(name = "binann-convert-weights")]
struct Cli {
    /// The legacy torch file to read (e.g. mobilenet_v2-b0353104.pth).
    #[arg(value_name = "SRC.pth")]
    src: PathBuf,
    /// The safetensors file to write (replaced if it exists).
    #[arg(value_name = "DST.safetensors")]
    dst: PathBuf,
}

fn main() -> std::process::ExitCode {
    binann_core::cli::main("binann-convert-weights", "warn", || {
        let cli = Cli::parse();
        let count = binann_weights::convert_legacy_torch_to_safetensors(&cli.src, &cli.dst)?;
        println!("converted {count} tensors: {} -> {}", cli.src.display(), cli.dst.display());
        Ok::<_, binann_weights::Error>(())
    })
}
