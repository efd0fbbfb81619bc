//! `binann-convert-weights SRC DST`: converts a legacy `torch.save` state_dict (`.pth`) into a
//! safetensors file. Used by `scripts/fetch-weights.sh`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, dst] = args.as_slice() else {
        eprintln!("usage: binann-convert-weights SRC.pth DST.safetensors");
        return ExitCode::from(2);
    };
    match binann_model::convert_legacy_torch_to_safetensors(src, dst) {
        Ok(count) => {
            println!("converted {count} tensors: {} -> {}", src.display(), dst.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
