//! Demo data: Fashion-MNIST (real product photos, 28×28 grayscale) written out as PNG files, with
//! the ground truth in a CSV that binann itself never reads (it is for the simulated annotator and
//! the benchmarks).

use std::io::Read;
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
    /// How many images (without --prevalence: the first N of train, then test).
    #[arg(long, default_value_t = 5000)]
    count: usize,
    /// The positive class: class names separated by commas (e.g. sneaker, or trouser,ankle_boot:
    /// several kinds of positive), or "shoe" (sandal, sneaker, ankle boot).
    #[arg(long, default_value = "sneaker")]
    pub positive: String,
    /// Draw the images so that this share of them is positive (e.g. 0.01), split evenly over the
    /// positive kinds, the rest from the other classes; the files are shuffled. Without it, the
    /// first --count images are taken as they come (each class is about 10 %).
    #[arg(long)]
    prevalence: Option<f64>,
    /// Seed of the --prevalence draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Without --prevalence: skip this many images first (60000: Fashion-MNIST's test split).
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// With --prevalence: also write this many more images of each positive kind, none of them in
    /// --out, into --seed-out (examples to give binann as seed images).
    #[arg(long, default_value_t = 0, requires = "seed_out")]
    seed_images: usize,
    /// Folder for the --seed-images examples (created; must be empty or missing).
    #[arg(long)]
    seed_out: Option<PathBuf>,
}

/// The Fashion-MNIST label numbers that `spec` names as positive (see `--positive`).
pub fn positive_classes(spec: &str) -> anyhow::Result<Vec<u8>> {
    let mut classes = Vec::new();
    for name in spec.split(',').map(str::trim) {
        if name == "shoe" {
            classes.extend([5, 7, 9]);
            continue;
        }
        match CLASSES.iter().position(|c| *c == name) {
            Some(i) => classes.push(i as u8),
            None => bail!("unknown positive class {name:?}; use one of {} or shoe", CLASSES.join(", ")),
        }
    }
    classes.sort_unstable();
    classes.dedup();
    Ok(classes)
}

/// Which of `labels` to write: the first `count`, or with a prevalence, `round(p × count)`
/// positives split evenly over the positive kinds and negatives for the rest, all drawn at random
/// (seeded) and shuffled together. Also `extra` more positives of each kind that are not among
/// them (seed images), in kind order.
fn draw(
    labels: &[u8],
    positive: &[u8],
    count: usize,
    prevalence: Option<f64>,
    seed: u64,
    extra: usize,
) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    let Some(p) = prevalence else {
        if count > labels.len() {
            bail!("asked for {count} images, Fashion-MNIST has {}", labels.len());
        }
        if extra > 0 {
            bail!("--seed-images needs --prevalence");
        }
        return Ok(((0..count).collect(), Vec::new()));
    };
    if !(p > 0.0 && p < 1.0) {
        bail!("--prevalence must be between 0 and 1 (exclusive), got {p}");
    }
    let shuffled = |mut v: Vec<usize>, salt: u64| {
        v.sort_by_cached_key(|i| binann_core::ranking::shuffle_key(seed.wrapping_mul(0x9E37).wrapping_add(salt), *i as u32));
        v
    };
    let positives = ((p * count as f64).round() as usize).max(1);
    let mut chosen = Vec::with_capacity(count);
    let mut seeds = Vec::new();
    for (k, class) in positive.iter().enumerate() {
        let want = positives / positive.len() + usize::from(k < positives % positive.len());
        let pool = shuffled((0..labels.len()).filter(|i| labels[*i] == *class).collect(), 1 + u64::from(*class));
        if pool.len() < want + extra {
            bail!("asked for {} images of {}, Fashion-MNIST has {}", want + extra, CLASSES[*class as usize], pool.len());
        }
        chosen.extend_from_slice(&pool[..want]);
        seeds.extend_from_slice(&pool[want..want + extra]);
    }
    let negatives = shuffled((0..labels.len()).filter(|i| !positive.contains(&labels[*i])).collect(), 100);
    let want = count - positives.min(count);
    if negatives.len() < want {
        bail!("asked for {want} negative images, Fashion-MNIST has {}", negatives.len());
    }
    chosen.extend_from_slice(&negatives[..want]);
    Ok((shuffled(chosen, 200), seeds))
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
    if args.skip > 0 && args.prevalence.is_some() {
        bail!("--skip applies only without --prevalence");
    }
    let (chosen, seeds) =
        draw(&labels[args.skip.min(labels.len())..], &positive, args.count, args.prevalence, args.seed, args.seed_images)?;
    let chosen: Vec<usize> = chosen.into_iter().map(|i| i + args.skip).collect();
    if let Some(dir) = &args.seed_out {
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            bail!("{} exists and is not empty; choose another folder or remove it", dir.display());
        }
        std::fs::create_dir_all(dir)?;
        for (j, i) in seeds.iter().enumerate() {
            let (pixels, w, h) = &images[*i];
            let path = dir.join(format!("{}-{j:03}.png", CLASSES[labels[*i] as usize]));
            image::GrayImage::from_raw(*w, *h, pixels.clone())
                .context("image size mismatch")?
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        println!("wrote {} seed images (not in {}) to {}", seeds.len(), args.out.display(), dir.display());
    }
    std::fs::create_dir_all(&args.out)?;
    if let Some(dir) = args.truth.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let progress = indicatif::ProgressBar::new(args.count as u64).with_message("writing PNG files");
    use rayon::prelude::*;
    let rows: Vec<[String; 3]> = (0..args.count)
        .into_par_iter()
        .map(|i| -> anyhow::Result<[String; 3]> {
            let (pixels, w, h) = &images[chosen[i]];
            // Folders of 1,000 keep directory listings small, as real datasets tend to be.
            let rel = format!("{:03}/{i:06}.png", i / 1000);
            let path = args.out.join(&rel);
            std::fs::create_dir_all(path.parent().expect("has a parent"))?;
            image::GrayImage::from_raw(*w, *h, pixels.clone())
                .context("image size mismatch")?
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            progress.inc(1);
            let class = labels[chosen[i]];
            Ok([rel, u8::from(positive.contains(&class)).to_string(), CLASSES[class as usize].to_owned()])
        })
        .collect::<anyhow::Result<_>>()?;
    progress.finish_and_clear();
    let mut csv = csv::Writer::from_path(&args.truth).with_context(|| format!("creating {}", args.truth.display()))?;
    csv.write_record(["path", "label", "class"])?;
    for row in &rows {
        csv.write_record(row)?;
    }
    csv.flush()?;
    let positives = rows.iter().filter(|r| r[1] == "1").count();
    println!(
        "wrote {} images to {} ({positives} positive: {}), truth in {}",
        rows.len(),
        args.out.display(),
        args.positive,
        args.truth.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_spec_names_one_or_several_kinds() {
        assert_eq!(positive_classes("sneaker").unwrap(), [7]);
        assert_eq!(positive_classes("trouser,ankle_boot").unwrap(), [1, 9]);
        assert_eq!(positive_classes("shoe,sneaker").unwrap(), [5, 7, 9]);
        assert!(positive_classes("trouser,boots").unwrap_err().to_string().contains("\"boots\""));
    }

    #[test]
    fn prevalence_draws_that_share_split_over_the_kinds() {
        // 10 classes of 1,000 images each, in class order (as Fashion-MNIST is not).
        let labels: Vec<u8> = (0..10_000).map(|i| (i / 1000) as u8).collect();
        let (chosen, seeds) = draw(&labels, &[1, 9], 2000, Some(0.01), 3, 4).unwrap();
        assert_eq!(chosen.len(), 2000);
        // Four seed images of each kind, none of them in the folder.
        assert_eq!(seeds.iter().map(|i| labels[*i]).collect::<Vec<_>>(), [1, 1, 1, 1, 9, 9, 9, 9]);
        assert!(seeds.iter().all(|s| !chosen.contains(s)), "a seed image is in the folder");
        let count = |class: u8| chosen.iter().filter(|i| labels[**i] == class).count();
        assert_eq!((count(1), count(9)), (10, 10));
        let mut unique = chosen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 2000, "an image drawn twice");
        // Shuffled: the positives are not bunched at the start.
        let first_positive = chosen.iter().position(|i| [1, 9].contains(&labels[*i])).unwrap();
        assert!(first_positive > 10, "{first_positive}");
        assert_eq!(chosen, draw(&labels, &[1, 9], 2000, Some(0.01), 3, 0).unwrap().0, "seed images change nothing in the folder");
        assert_ne!(chosen, draw(&labels, &[1, 9], 2000, Some(0.01), 4, 0).unwrap().0);
        assert!(draw(&labels, &[1], 2000, Some(0.9), 3, 0).unwrap_err().to_string().contains("trouser"));
        assert!(draw(&labels, &[1], 2000, Some(0.01), 3, 990).unwrap_err().to_string().contains("trouser"));
        assert_eq!(draw(&labels, &[1], 50, None, 3, 0).unwrap().0, (0..50).collect::<Vec<_>>());
    }
}
