//! Demo data: Fashion-MNIST (real product photos, 28×28 grayscale) written out as PNG files, with
//! the ground truth in a CSV that binann itself never reads (it is for the simulated annotator and
//! the benchmarks).
//!
//! The IDX reader ([`read_idx_from`], [`split_from`]) checks every claim the downloaded files make
//! (magic, dimensions, counts, classes) before relying on it: a damaged or forged file is an error,
//! never a panic or an allocation of the size its header claims.

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

/// IDX magic numbers (unsigned bytes; 3 dimensions: images, 1: labels).
const IDX_IMAGES: u32 = 0x0803;
const IDX_LABELS: u32 = 0x0801;
/// The most data bytes an IDX file may claim. Fashion-MNIST's largest file holds 47 MB; the bound
/// turns forged dimensions into an error before anything is read, and below it the data buffer
/// grows only with the bytes actually present (never reserved from the header's claim).
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Why an IDX file (or a pair of them) was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// Reading or decompressing failed.
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    /// Another kind of IDX file, or not one at all.
    #[error("not an IDX file of the expected kind (magic {found:#x}, expected {expected:#x})")]
    Magic {
        /// The first four bytes, big-endian.
        found: u32,
        /// What was expected.
        expected: u32,
    },
    /// The file ends before its header or its data does.
    #[error("truncated: {what} needs {needed} bytes, there are {found}")]
    Truncated {
        /// Which part.
        what: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// Bytes there were.
        found: u64,
    },
    /// Dimensions whose product is larger than [`MAX_IDX_BYTES`] (or than any number).
    #[error("dimensions {0:?} claim more than {MAX_IDX_BYTES} bytes")]
    TooLarge(Vec<u32>),
    /// Images and labels that do not fit together.
    #[error("{0}")]
    Mismatch(String),
}

/// An IDX file of unsigned bytes: its dimensions and its data (the product of the dimensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions, outermost first.
    pub dims: Vec<u32>,
    /// The data, row-major.
    pub data: Vec<u8>,
}

/// Reads an (uncompressed) IDX stream whose magic must be `expected_magic`. Bytes after the data
/// are ignored.
pub fn read_idx_from(mut reader: impl Read, expected_magic: u32) -> Result<Idx, IdxError> {
    let mut read_exact = |buf: &mut [u8], what: &'static str, needed: u64| {
        let mut got = 0;
        while got < buf.len() {
            match reader.read(&mut buf[got..]) {
                Ok(0) => return Err(IdxError::Truncated { what, needed, found: needed - (buf.len() - got) as u64 }),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    };
    let mut word = [0u8; 4];
    read_exact(&mut word, "the magic number", 4)?;
    let magic = u32::from_be_bytes(word);
    if magic != expected_magic {
        return Err(IdxError::Magic { found: magic, expected: expected_magic });
    }
    let rank = (magic & 0xff) as usize;
    let mut header = vec![0u8; 4 * rank];
    let needed = 4 + header.len() as u64;
    read_exact(&mut header, "the dimensions", needed)?;
    let dims: Vec<u32> = header.chunks_exact(4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes"))).collect();
    let len = dims.iter().try_fold(1u64, |n, d| n.checked_mul(u64::from(*d))).filter(|n| *n <= MAX_IDX_BYTES);
    let Some(len) = len else { return Err(IdxError::TooLarge(dims)) };
    let mut data = Vec::new();
    reader.take(len).read_to_end(&mut data)?;
    if (data.len() as u64) < len {
        return Err(IdxError::Truncated { what: "the data", needed: len, found: data.len() as u64 });
    }
    Ok(Idx { dims, data })
}

/// Reads a gzip-compressed IDX file (as Fashion-MNIST is distributed).
fn read_idx(path: &Path, expected_magic: u32) -> anyhow::Result<Idx> {
    let file =
        std::fs::File::open(path).with_context(|| format!("opening {} (run scripts/setup.sh to fetch Fashion-MNIST)", path.display()))?;
    read_idx_from(flate2::read::GzDecoder::new(file), expected_magic).with_context(|| format!("reading {}", path.display()))
}

/// One split of Fashion-MNIST: each image (pixels, width, height) with its class.
#[derive(Debug)]
pub struct Split {
    /// Grayscale pixels, width, height.
    pub images: Vec<(Vec<u8>, u32, u32)>,
    /// The class of each image, an index into [`CLASSES`].
    pub labels: Vec<u8>,
}

/// Pairs an images file with its labels file, checking everything the writing relies on: images
/// of at least one pixel, as many labels as images, every label a known class.
pub fn split_from(images: Idx, labels: Idx) -> Result<Split, IdxError> {
    let (&[count, h, w], &[classes]) = (images.dims.as_slice(), labels.dims.as_slice()) else {
        return Err(IdxError::Mismatch(format!("images of dimensions {:?} with labels of {:?}", images.dims, labels.dims)));
    };
    if h == 0 || w == 0 {
        return Err(IdxError::Mismatch(format!("images of {w}x{h} pixels")));
    }
    if classes != count {
        return Err(IdxError::Mismatch(format!("{count} images but {classes} labels")));
    }
    // What a file gives always fits its dimensions (see read_idx_from); an Idx built otherwise may not.
    let side = h as usize * w as usize;
    if u64::from(count).checked_mul(side as u64) != Some(images.data.len() as u64) || labels.data.len() != classes as usize {
        return Err(IdxError::Mismatch(format!(
            "{} bytes of images and {} labels for {count} images",
            images.data.len(),
            labels.data.len()
        )));
    }
    if let Some(bad) = labels.data.iter().find(|l| usize::from(**l) >= CLASSES.len()) {
        return Err(IdxError::Mismatch(format!("label {bad} is not one of the {} classes", CLASSES.len())));
    }
    let images = images.data.chunks_exact(side).map(|c| (c.to_vec(), w, h)).collect();
    Ok(Split { images, labels: labels.data })
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
        let pixels = read_idx(&args.source.join(format!("{split}-images-idx3-ubyte.gz")), IDX_IMAGES)?;
        let classes = read_idx(&args.source.join(format!("{split}-labels-idx1-ubyte.gz")), IDX_LABELS)?;
        let split = split_from(pixels, classes).with_context(|| format!("Fashion-MNIST's {split} split"))?;
        images.extend(split.images);
        labels.extend(split.labels);
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

    /// The IDX encoding of `dims` and `data` (magic with `rank` dimensions of unsigned bytes).
    fn idx_bytes(rank: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = (0x0800 | rank).to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// Small images files: 0..6 images of 0..5 x 0..5 pixels, their bytes, and a label per image.
    fn small_split() -> impl Strategy<Value = (Vec<u32>, Vec<u8>, Vec<u8>)> {
        (0u32..6, 0u32..5, 0u32..5).prop_flat_map(|(n, h, w)| {
            let dims = vec![n, h, w];
            (Just(dims), proptest::collection::vec(any::<u8>(), (n * h * w) as usize), proptest::collection::vec(0u8..10, n as usize))
        })
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Any bytes: an error or a file whose data is what its dimensions say, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), magic in prop::sample::select(vec![IDX_IMAGES, IDX_LABELS])) {
            if let Ok(idx) = read_idx_from(bytes.as_slice(), magic) {
                let len: u64 = idx.dims.iter().map(|d| u64::from(*d)).product();
                prop_assert_eq!(idx.data.len() as u64, len);
                prop_assert!(idx.data.len() <= bytes.len());
            }
        }

        /// Any bytes with the right magic in front (so the dimensions are read): the same.
        #[test]
        fn arbitrary_headers_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..64), images in any::<bool>()) {
            let magic = if images { IDX_IMAGES } else { IDX_LABELS };
            let mut bytes = magic.to_be_bytes().to_vec();
            bytes.extend_from_slice(&tail);
            match read_idx_from(bytes.as_slice(), magic) {
                Ok(idx) => prop_assert_eq!(idx.dims.len(), if images { 3 } else { 1 }),
                Err(IdxError::Truncated { .. } | IdxError::TooLarge(_)) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        /// Forged dimensions over a few bytes of data: refused (too large, or truncated) without
        /// reading or reserving what they claim. A claim beyond the bound is refused outright.
        #[test]
        fn forged_dimensions_are_an_error(dims in proptest::array::uniform3(any::<u32>()), data in proptest::collection::vec(any::<u8>(), 0..32)) {
            let claimed = dims.iter().try_fold(1u64, |n, d| n.checked_mul(u64::from(*d)));
            prop_assume!(claimed.is_none_or(|c| c > data.len() as u64));
            let started = std::time::Instant::now();
            match read_idx_from(idx_bytes(3, &dims, &data).as_slice(), IDX_IMAGES) {
                Err(IdxError::TooLarge(d)) => prop_assert!(claimed.is_none_or(|c| c > MAX_IDX_BYTES) && d == dims),
                Err(IdxError::Truncated { needed, found, .. }) => prop_assert!(needed == claimed.unwrap() && found == data.len() as u64),
                other => prop_assert!(false, "{dims:?} over {} bytes: {other:?}", data.len()),
            }
            prop_assert!(started.elapsed() < std::time::Duration::from_secs(1), "a forged claim took {:?}", started.elapsed());
        }

        /// A well-formed file (with anything after its data) reads back, and every cut of it short
        /// of the data's end is a truncation error; gzip-compressed, the same.
        #[test]
        fn well_formed_files_round_trip_and_cuts_are_truncated(
            (dims, data, labels) in small_split(),
            trailing in proptest::collection::vec(any::<u8>(), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = idx_bytes(3, &dims, &data);
            let full = bytes.len();
            bytes.extend_from_slice(&trailing);
            let idx = read_idx_from(bytes.as_slice(), IDX_IMAGES).unwrap();
            prop_assert_eq!(&idx, &Idx { dims: dims.clone(), data: data.clone() });
            let cut = cut.index(full);
            let short = read_idx_from(&bytes[..cut], IDX_IMAGES);
            prop_assert!(matches!(short, Err(IdxError::Truncated { .. })), "cut at {cut} of {full}: {short:?}");

            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("images.gz");
            std::fs::write(&path, gzip(&bytes)).unwrap();
            prop_assert_eq!(read_idx(&path, IDX_IMAGES).unwrap(), idx.clone());
            std::fs::write(&path, gzip(&bytes[..cut])).unwrap();
            prop_assert!(read_idx(&path, IDX_IMAGES).is_err());

            let split = split_from(idx, Idx { dims: vec![dims[0]], data: labels.clone() });
            if dims[1] == 0 || dims[2] == 0 {
                prop_assert!(split.is_err());
            } else {
                let split = split.unwrap();
                prop_assert_eq!(split.images.len(), labels.len());
                prop_assert!(split.images.iter().all(|(p, w, h)| p.len() == (w * h) as usize && (*w, *h) == (dims[2], dims[1])));
            }
        }

        /// Images and labels that do not fit together (counts, unknown classes, shapes) are an
        /// error, not an index out of bounds while writing.
        #[test]
        fn mismatched_splits_are_an_error(
            (dims, data, _) in small_split(),
            labels in proptest::collection::vec(any::<u8>(), 0..8),
            label_dims in proptest::collection::vec(0u32..8, 0..3),
        ) {
            let images = Idx { dims: dims.clone(), data };
            let labels = Idx { dims: label_dims.clone(), data: labels };
            let fits = label_dims.len() == 1 && label_dims[0] == dims[0] && labels.data.len() == dims[0] as usize
                && labels.data.iter().all(|l| *l < 10) && dims[1] > 0 && dims[2] > 0;
            prop_assume!(!fits);
            prop_assert!(split_from(images, labels).is_err());
        }

        /// Corrupt compressed files (any bytes, or a real file with a flipped bit) are an error or
        /// a well-formed result, never a panic.
        #[test]
        fn corrupt_gzip_never_panics(junk in proptest::collection::vec(any::<u8>(), 0..200), (dims, data, _) in small_split(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("x.gz");
            std::fs::write(&path, &junk).unwrap();
            let _ = read_idx(&path, IDX_IMAGES);
            let mut gz = gzip(&idx_bytes(3, &dims, &data));
            let at = flip.index(gz.len());
            gz[at] ^= 1 << bit;
            std::fs::write(&path, &gz).unwrap();
            if let Ok(idx) = read_idx(&path, IDX_IMAGES) {
                prop_assert_eq!(idx.data.len() as u64, idx.dims.iter().map(|d| u64::from(*d)).product::<u64>());
            }
        }
    }

    #[test]
    fn the_real_fashion_mnist_files_read() {
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/fashion-mnist");
        assert!(source.exists(), "run `bash scripts/setup.sh` first (Fashion-MNIST in .cache/)");
        let images = read_idx(&source.join("t10k-images-idx3-ubyte.gz"), IDX_IMAGES).unwrap();
        let labels = read_idx(&source.join("t10k-labels-idx1-ubyte.gz"), IDX_LABELS).unwrap();
        assert_eq!((images.dims.as_slice(), labels.dims.as_slice()), (&[10_000, 28, 28][..], &[10_000][..]));
        let split = split_from(images, labels).unwrap();
        assert_eq!(split.images.len(), 10_000);
        // Each class is a tenth of the test split.
        assert_eq!(split.labels.iter().filter(|l| **l == 7).count(), 1_000);
        assert!(matches!(
            read_idx(&source.join("t10k-labels-idx1-ubyte.gz"), IDX_IMAGES).unwrap_err().downcast::<IdxError>(),
            Ok(IdxError::Magic { found: 0x0801, expected: 0x0803 })
        ));
    }
}
