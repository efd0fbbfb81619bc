//! Demo data: Fashion-MNIST (real product photos, 28×28 grayscale) written out as PNG files, with
//! the ground truth in a CSV that binann itself never reads (it is for the simulated annotator and
//! the benchmarks).

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The ten Fashion-MNIST classes, by label number.
pub const CLASSES: [&str; 10] = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"];

/// Options of `binann demo-data`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder holding `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz` (and t10k-*).
    #[arg(long, env = "BINANN_FASHION_MNIST")]
    source: PathBuf,
    /// Folder to write the images into (created; must be empty or missing).
    #[arg(long)]
    out: PathBuf,
    /// Ground-truth CSV to write (path,label,class); keep it outside `--out`.
    #[arg(long)]
    truth: PathBuf,
    /// How many images (the first N of train, then test).
    #[arg(long, default_value_t = 5000)]
    count: usize,
    /// The positive class: a class name (e.g. sneaker, bag) or "shoe" (sandal, sneaker, ankle boot).
    #[arg(long, default_value = "sneaker")]
    positive: String,
}

fn positive_classes(name: &str) -> anyhow::Result<Vec<u8>> {
    if name == "shoe" {
        return Ok(vec![5, 7, 9]);
    }
    match CLASSES.iter().position(|c| *c == name) {
        Some(i) => Ok(vec![i as u8]),
        None => bail!("unknown positive class {name:?}; use one of {} or shoe", CLASSES.join(", ")),
    }
}

fn read_idx(path: &Path, expected_magic: u32) -> anyhow::Result<(Vec<u32>, Vec<u8>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("opening {} (run scripts/setup.sh to fetch Fashion-MNIST)", path.display()))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut bytes).with_context(|| format!("decompressing {}", path.display()))?;
    let word = |i: usize| -> anyhow::Result<u32> {
        let b = bytes.get(i * 4..i * 4 + 4).with_context(|| format!("{} is truncated", path.display()))?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    };
    let magic = word(0)?;
    if magic != expected_magic {
        bail!("{}: not an IDX file of the expected kind (magic {magic:#x}, expected {expected_magic:#x})", path.display());
    }
    let dims: Vec<u32> = (1..=(magic & 0xff) as usize).map(word).collect::<anyhow::Result<_>>()?;
    let start = 4 * (1 + dims.len());
    let len: usize = dims.iter().map(|d| *d as usize).product();
    let data = bytes.get(start..start + len).with_context(|| format!("{} is truncated", path.display()))?.to_vec();
    Ok((dims, data))
}

/// Writes the demo dataset.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let positive = positive_classes(&args.positive)?;
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("{} exists and is not empty; choose another folder or remove it", args.out.display());
    }
    if std::path::absolute(&args.truth)?.starts_with(std::path::absolute(&args.out)?) {
        bail!("keep the truth CSV outside the image folder, or binann could be said to read it");
    }
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for split in ["train", "t10k"] {
        let (dims, pixels) = read_idx(&args.source.join(format!("{split}-images-idx3-ubyte.gz")), 0x0803)?;
        let (_, l) = read_idx(&args.source.join(format!("{split}-labels-idx1-ubyte.gz")), 0x0801)?;
        let (h, w) = (dims[1] as usize, dims[2] as usize);
        images.extend(pixels.chunks_exact(h * w).map(|c| (c.to_vec(), w as u32, h as u32)));
        labels.extend(l);
    }
    if args.count > images.len() {
        bail!("asked for {} images, Fashion-MNIST has {}", args.count, images.len());
    }
    std::fs::create_dir_all(&args.out)?;
    if let Some(dir) = args.truth.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let progress = indicatif::ProgressBar::new(args.count as u64).with_message("writing PNG files");
    use rayon::prelude::*;
    let rows: Vec<String> = (0..args.count)
        .into_par_iter()
        .map(|i| -> anyhow::Result<String> {
            let (pixels, w, h) = &images[i];
            // Folders of 1,000 keep directory listings small, as real datasets tend to be.
            let rel = format!("{:03}/{i:06}.png", i / 1000);
            let path = args.out.join(&rel);
            std::fs::create_dir_all(path.parent().expect("has a parent"))?;
            image::GrayImage::from_raw(*w, *h, pixels.clone())
                .context("image size mismatch")?
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            progress.inc(1);
            let class = labels[i];
            Ok(format!("{rel},{},{}", u8::from(positive.contains(&class)), CLASSES[class as usize]))
        })
        .collect::<anyhow::Result<_>>()?;
    progress.finish_and_clear();
    let mut csv = BufWriter::new(std::fs::File::create(&args.truth)?);
    writeln!(csv, "path,label,class")?;
    for row in &rows {
        writeln!(csv, "{row}")?;
    }
    csv.flush()?;
    let positives = rows.iter().filter(|r| r.contains(",1,")).count();
    println!(
        "wrote {} images to {} ({positives} positive: {}), truth in {}",
        rows.len(),
        args.out.display(),
        args.positive,
        args.truth.display()
    );
    Ok(())
}
