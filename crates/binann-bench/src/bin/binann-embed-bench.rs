//! `binann-embed-bench [--device D] [--seconds S] [--sizes PX,...] [--no-head] [--weights PATH] [--threads N]`
//!
//! Prints backbone embedding throughput at 224, 112 and 64 px (random images, batch 32) in each
//! runtime that can run it (libtorch; ONNX Runtime and OpenVINO on the CPU, when installed), the one
//! `Backbone::load` chose, the ratios to libtorch, and the time to train a head on 2000 random embeddings. `scripts/bench-runtime.sh` puts
//! these beside ONNX Runtime and OpenVINO running the same graph from Python.
//!
//! `binann-embed-bench --write-onnx PATH [--weights PATH]`
//!
//! Writes the backbone's ONNX graph, as binann runs it (input `images`, N×3×S×S; output
//! `levels`, N×1920), and does nothing else.
//!
//! `binann-embed-bench --images DIR [--size PX] [--batch N] [--threads N] [--idle-streams N] [--weights PATH]`
//!
//! Embeds every image of DIR (searched recursively) as the inferrer does: decoded on every core,
//! one batch ahead of the network. Prints the images per second; time the whole process to
//! compare with another stack (`scripts/bench-peer.sh`). `--preprocess` instead times decoding
//! and resizing alone, one image at a time on one thread, with and without reduced-scale JPEG
//! decoding.
//!
//! `binann-embed-bench --make-photos SRC OUT COUNT`
//!
//! Writes COUNT 12-megapixel (4000×3000) JPEGs to OUT, made from the photos in SRC: each one is a
//! photo stretched over the frame, shifted and mirrored differently, with sensor-like noise, saved
//! at quality 92 (3–6 MB, as a phone writes them).
//!
//! Random weights are used when the converted weights are absent: speed does not depend on them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use binann_model::{
    Backbone, DEFAULT_HIDDEN_UNITS, DEFAULT_WEIGHTS_PATH, DeviceChoice, EMBED_DIM, EmbedResult, Head, Preprocess, Runtime, RuntimeChoice,
    TIMING_RUNTIMES, TrainOptions, resolve_device,
};
use clap::Parser;
use tch::{Device, Kind, Tensor};

/// The inferrer's default batch (`BINANN_BATCH`): on 2 threads, 16 images a stream, as many as
/// each request of the Python peers in `scripts/bench-runtime.sh`.
const BATCH: i64 = 32;

/// Backbone embedding and head training throughput (random tensors), or embedding a folder of
/// images as the inferrer does.
#[derive(Debug, Parser)]
#[command(name = "binann-embed-bench")]
struct Cli {
    /// Where libtorch runs: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Seconds to time each input size (random tensors only).
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Input sizes to time, in pixels (random tensors only).
    #[arg(long, value_name = "PX,...", value_delimiter = ',', default_values_t = [224u32, 112, 64])]
    sizes: Vec<u32>,
    /// Time the backbone only, not the head.
    #[arg(long)]
    no_head: bool,
    /// Converted backbone weights; random weights are used when the file is absent.
    #[arg(long, default_value = DEFAULT_WEIGHTS_PATH)]
    weights: PathBuf,
    /// Threads for libtorch and for decoding (default: libtorch's and rayon's own choice).
    #[arg(long)]
    threads: Option<usize>,
    /// Network streams at the lowest priority beside those --threads gives, as the inferrer runs
    /// on the cores it leaves to the trainer (with --images).
    #[arg(long, value_name = "N", default_value_t = 0)]
    idle_streams: usize,
    /// Embed every image under DIR (searched recursively) instead of random tensors.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Network input side in pixels (with --images).
    #[arg(long, value_name = "PX", default_value_t = 224)]
    size: u32,
    /// Images per batch (with --images).
    #[arg(long, value_name = "N", default_value_t = 32)]
    batch: usize,
    /// With --images: run the network in libtorch even where ONNX Runtime or OpenVINO is installed.
    #[arg(long)]
    libtorch: bool,
    /// With --images: time decoding and resizing alone, one image at a time on one thread, with
    /// and without reduced-scale JPEG decoding.
    #[arg(long)]
    preprocess: bool,
    /// Write the backbone's ONNX graph to PATH, and do nothing else.
    #[arg(long, value_name = "PATH")]
    write_onnx: Option<PathBuf>,
    /// Write COUNT 12-megapixel JPEGs to OUT made from the photos in SRC, and do nothing else.
    #[arg(long, num_args = 3, value_names = ["SRC", "OUT", "COUNT"])]
    make_photos: Option<Vec<String>>,
}

fn main() -> std::process::ExitCode {
    binann_model::with_cpu_runtime_env();
    binann_core::cli::main("binann-embed-bench", "warn", || run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    if let Some(threads) = cli.threads {
        binann_model::set_threads(threads);
    }
    binann_model::set_idle_streams(cli.idle_streams);
    if let Some([src, out, count]) = cli.make_photos.as_deref() {
        let count = count.parse().with_context(|| format!("--make-photos COUNT {count:?}"))?;
        return make_photos(Path::new(src), Path::new(out), count);
    }
    let device = resolve_device(cli.device)?;
    let weights = cli.weights;
    if let Some(path) = cli.write_onnx {
        let backbone = if weights.exists() { Backbone::load(&weights, 224, Device::Cpu)? } else { Backbone::untrained(224, Device::Cpu) };
        std::fs::write(&path, backbone.onnx_graph())?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    if let Some(dir) = cli.images {
        let files: Vec<PathBuf> = binann_core::manifest::list_images(&dir)?.iter().map(|r| dir.join(r)).collect();
        if files.is_empty() {
            bail!("no images in {}", dir.display());
        }
        let (size, batch) = (cli.size, cli.batch);
        return if cli.preprocess {
            time_preprocessing(&files, size)
        } else {
            embed_folder(&files, size, batch, &weights, device, cli.libtorch)
        };
    }
    println!("device {device:?}, libtorch threads {}, batch {BATCH}", tch::get_num_threads());

    for &size in &cli.sizes {
        let loaded = if weights.exists() { Backbone::load(&weights, size, device)? } else { Backbone::untrained(size, device) };
        let seconds = Duration::from_secs_f64(cli.seconds);
        let mut rates = Vec::new();
        if device == Device::Cpu {
            // What a backbone keeps after the runtimes take turns on its first batches (of noise
            // here), then each runtime timed here.
            let noise = noise_image(&loaded);
            for _ in 0..100 {
                if loaded.runtime().0 != TIMING_RUNTIMES {
                    break;
                }
                loaded.embed_decoded(batch_of(&noise));
            }
            println!("embed {size:>3} px: chosen {}", loaded.runtime().0);
            let mut backbone = loaded;
            for runtime in Runtime::ALL {
                backbone = backbone.with_cpu_runtime(RuntimeChoice::Only(runtime));
                match backbone.runtime() {
                    (name, None) => rates.push((name, embed_rate(&backbone, seconds))),
                    (_, Some(why)) => println!("embed {size:>3} px: {} not available: {why}", runtime.name()),
                }
            }
            let torch = backbone.without_cpu_runtime();
            rates.push(("libtorch", embed_rate(&torch, seconds)));
        } else {
            rates.push(("libtorch", embed_rate(&loaded, seconds)));
        }
        for (runtime, rate) in &rates {
            println!("embed {size:>3} px: {runtime:<11} {rate:7.1} images/s");
        }
        if let Some((_, torch)) = rates.iter().find(|(name, _)| *name == "libtorch") {
            for (runtime, rate) in rates.iter().filter(|(name, _)| *name != "libtorch") {
                println!("embed {size:>3} px: {runtime} / libtorch = {:.2}", rate / torch);
            }
        }
    }
    if cli.no_head {
        return Ok(());
    }

    for (name, hidden, opts) in [
        ("default (mlp-64, batch 256)", DEFAULT_HIDDEN_UNITS, TrainOptions::default()),
        ("logistic regression, full batch", 0, TrainOptions { batch_size: None, ..TrainOptions::default() }),
    ] {
        let (x, y) = toy_embeddings(2000, device);
        let mut head = Head::with_hidden(device, hidden);
        head.train(&x, &y, &TrainOptions { steps: 5, ..opts.clone() }); // warm-up
        let mut head = Head::with_hidden(device, hidden);
        let report = head.train(&x, &y, &opts);
        println!(
            "head {name}: 2000x{EMBED_DIM}, {} steps in {} ms (train accuracy {:.3})",
            report.steps, report.elapsed_ms, report.accuracy
        );
    }
    Ok(())
}

/// Embeds the files as the inferrer does and prints the rate (no warm-up: the whole job counts).
fn embed_folder(files: &[PathBuf], size: u32, batch: usize, weights: &Path, device: Device, libtorch: bool) -> Result<()> {
    let started = Instant::now();
    let backbone = if weights.exists() { Backbone::load(weights, size, device)? } else { Backbone::untrained(size, device) };
    let backbone = if libtorch { backbone.without_cpu_runtime() } else { backbone };
    let results = backbone.embed_paths(files, batch, |_| {});
    let failed = results.iter().filter(|r| r.is_err()).count();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "embedded {} images at {size} px in {}, batch {batch}, {} network threads, {} decoding threads: {elapsed:.2} s, {:.1} images/s ({failed} unreadable)",
        files.len(),
        backbone.runtime().0,
        tch::get_num_threads(),
        rayon::current_num_threads(),
        files.len() as f64 / elapsed
    );
    Ok(())
}

/// Decoding and resizing alone, per image, on this thread: with reduced-scale JPEG decoding (what
/// binann does) and with full decoding (what it did).
fn time_preprocessing(files: &[PathBuf], size: u32) -> Result<()> {
    let preprocess = Preprocess { size };
    let mut per_image = Vec::new();
    for (name, full) in [("full decode", true), ("scaled decode", false)] {
        let started = Instant::now();
        let mut failed = 0;
        for file in files {
            let loaded = if full { preprocess.load_image_full(file) } else { preprocess.load_image(file) };
            failed += usize::from(loaded.is_err());
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0 / files.len() as f64;
        println!("preprocess {} images to {size} px, {name}: {ms:.2} ms per image on one thread ({failed} unreadable)", files.len());
        per_image.push(ms);
    }
    println!("scaled decoding is {:.1}x faster", per_image[0] / per_image[1]);
    Ok(())
}

fn make_photos(src: &Path, out: &Path, count: usize) -> Result<()> {
    let sources: Vec<PathBuf> = binann_core::manifest::list_images(src)?
        .iter()
        .map(|r| src.join(r))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")))
        .collect();
    if sources.is_empty() {
        bail!("no JPEG photos in {}", src.display());
    }
    std::fs::create_dir_all(out)?;
    let (width, height) = (4000u32, 3000u32);
    let mut seed = 0x2545_f491_u32;
    for i in 0..count {
        let source_path = &sources[i % sources.len()];
        let source = image::open(source_path).with_context(|| format!("reading {}", source_path.display()))?;
        // Stretch a little past the frame so each copy can be shifted differently.
        let over = 1.0 + 0.05 * (i / sources.len()) as f32;
        let (w, h) = ((width as f32 * over) as u32, (height as f32 * over) as u32);
        let mut frame =
            source.resize_exact(w, h, image::imageops::FilterType::Triangle).crop_imm(w - width, h - height, width, height).into_rgb8();
        if i % 2 == 1 {
            image::imageops::flip_horizontal_in_place(&mut frame);
        }
        for p in frame.pixels_mut() {
            for c in p.0.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *c = (i32::from(*c) + (seed % 9) as i32 - 4).clamp(0, 255) as u8;
            }
        }
        let path = out.join(format!("IMG_{i:04}.jpg"));
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(file, 92).encode_image(&frame)?;
        println!("{} ({} KB)", path.display(), std::fs::metadata(&path)?.len() / 1024);
    }
    Ok(())
}

/// One preprocessed image of noise at `backbone`'s input size.
fn noise_image(backbone: &Backbone) -> Vec<f32> {
    let side = backbone.input_size() as i64;
    Vec::<f32>::try_from(Tensor::randn([3 * side * side], (Kind::Float, Device::Cpu))).expect("floats")
}

/// A batch of [`BATCH`] copies of `image`.
fn batch_of(image: &[f32]) -> Vec<EmbedResult> {
    (0..BATCH).map(|_| Ok(image.to_vec())).collect()
}

/// Images per second through [`Backbone::embed_decoded`] (the inferrer's path, in whichever
/// runtime the backbone uses), batches of [`BATCH`] random images, after a warm-up.
fn embed_rate(backbone: &Backbone, duration: Duration) -> f64 {
    let noise = noise_image(backbone);
    let batch = || batch_of(&noise);
    // Warm-up, as long as the peers' (at least 2 batches and 1 s): the first calls allocate and
    // pick kernels.
    let warming = Instant::now();
    for round in 0.. {
        if round >= 2 && warming.elapsed() >= Duration::from_secs(1) {
            break;
        }
        let _ = backbone.embed_decoded(batch());
    }
    let started = Instant::now();
    let mut embedded = 0;
    while started.elapsed() < duration {
        embedded += backbone.embed_decoded(batch()).iter().filter(|r| r.is_ok()).count();
    }
    embedded as f64 / started.elapsed().as_secs_f64()
}

fn toy_embeddings(n: i64, device: Device) -> (Tensor, Tensor) {
    let x = Tensor::rand([n, EMBED_DIM as i64], (Kind::Float, device)) * 2.0;
    let y = x.narrow(1, 0, 8).sum_dim_intlist(1, false, Kind::Float).gt(8.0).to_kind(Kind::Float);
    (x, y)
}
