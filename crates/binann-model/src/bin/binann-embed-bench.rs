//! `binann-embed-bench [--device D] [--seconds S] [--weights PATH] [--threads N]`
//!
//! Prints backbone embedding throughput at 224 and 112 px (random images, batch 16) and the
//! time to train a head on 2000 random 1280-d embeddings.
//!
//! Random weights are used when the converted weights are absent: speed does not depend on them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use binann_model::{Backbone, DEFAULT_HIDDEN_UNITS, DEFAULT_WEIGHTS_PATH, DeviceChoice, EMBED_DIM, Head, TrainOptions, resolve_device};
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 16;

fn main() -> Result<()> {
    let mut device = DeviceChoice::Auto;
    let mut seconds = 4.0;
    let mut weights = PathBuf::from(DEFAULT_WEIGHTS_PATH);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--device" => device = value()?.parse()?,
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--weights" => weights = value()?.into(),
            "--threads" => tch::set_num_threads(value()?.parse().context("--threads")?),
            other => {
                bail!("unknown argument {other:?}; usage: binann-embed-bench [--device D] [--seconds S] [--weights PATH] [--threads N]")
            }
        }
    }
    let device = resolve_device(device)?;
    println!("device {device:?}, libtorch threads {}, batch {BATCH}", tch::get_num_threads());

    for size in [224u32, 112] {
        let backbone = if weights.exists() { Backbone::load(&weights, size, device)? } else { Backbone::untrained(size, device) };
        let rate = embed_rate(&backbone, Duration::from_secs_f64(seconds));
        println!("embed {size:>3} px: {rate:7.1} images/s");
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

fn embed_rate(backbone: &Backbone, duration: Duration) -> f64 {
    let side = backbone.input_size() as i64;
    let images = Tensor::randn([BATCH, 3, side, side], (Kind::Float, backbone.device()));
    let _ = backbone.embed_batch(&images); // warm-up: first call allocates and picks kernels
    let started = Instant::now();
    let mut embedded = 0;
    while started.elapsed() < duration {
        let embeddings = backbone.embed_batch(&images);
        embedded += embeddings.size()[0];
        if backbone.device().is_cuda() {
            tch::Cuda::synchronize(0);
        }
    }
    embedded as f64 / started.elapsed().as_secs_f64()
}

fn toy_embeddings(n: i64, device: Device) -> (Tensor, Tensor) {
    let x = Tensor::rand([n, EMBED_DIM as i64], (Kind::Float, device)) * 2.0;
    let y = x.narrow(1, 0, 8).sum_dim_intlist(1, false, Kind::Float).gt(8.0).to_kind(Kind::Float);
    (x, y)
}
