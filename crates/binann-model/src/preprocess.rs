//! Image decoding and normalisation into the backbone's input layout.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

/// ImageNet channel means, which the pretrained backbone expects inputs normalised by.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Largest accepted image side, in pixels (guards against decompression bombs).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest decoder allocation, in bytes (guards against decompression bombs).
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// Turns image files into normalised `3×size×size` CHW float arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    /// Side of the square network input, in pixels.
    pub size: u32,
}

impl Preprocess {
    /// Decodes `path`, converts it to RGB (grey replicated, transparency composited onto white),
    /// resizes it to `size×size` and normalises it with ImageNet statistics.
    ///
    /// Returns `3 * size * size` values in CHW order. Errors name the file.
    pub fn load_image(&self, path: &Path) -> Result<Vec<f32>> {
        let image = decode(path).with_context(|| format!("cannot decode image {}", path.display()))?;
        Ok(self.normalize(&self.resize(image)))
    }

    /// Like [`Preprocess::load_image`] for an already decoded image.
    pub fn from_image(&self, image: DynamicImage) -> Vec<f32> {
        self.normalize(&self.resize(image))
    }

    fn resize(&self, image: DynamicImage) -> RgbImage {
        let size = self.size;
        // A Triangle filter over a multi-megapixel photo costs far more than the network does at
        // small input sizes; area-averaging down to twice the target first is cheap and keeps
        // the result free of aliasing.
        let image = if image.width() > 4 * size || image.height() > 4 * size { image.thumbnail_exact(2 * size, 2 * size) } else { image };
        let rgb = to_rgb_on_white(image);
        if rgb.dimensions() == (size, size) { rgb } else { image::imageops::resize(&rgb, size, size, FilterType::Triangle) }
    }

    fn normalize(&self, rgb: &RgbImage) -> Vec<f32> {
        let plane = (self.size * self.size) as usize;
        let mut chw = vec![0f32; 3 * plane];
        for (i, pixel) in rgb.pixels().enumerate() {
            for c in 0..3 {
                chw[c * plane + i] = (pixel[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        chw
    }
}

fn decode(path: &Path) -> Result<DynamicImage> {
    let mut reader = ImageReader::open(path)?.with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    // Not every decoder enforces max_alloc itself; the output buffer size is known up front.
    ensure!(
        decoder.total_bytes() <= MAX_DECODE_BYTES,
        "{width}x{height} image needs {} MiB, over the {} MiB limit",
        decoder.total_bytes() >> 20,
        MAX_DECODE_BYTES >> 20
    );
    // Phone photos are stored sideways with an EXIF rotation; apply it like viewers do.
    let orientation = decoder.orientation()?;
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn to_rgb_on_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let alpha = a as u32;
        let blend = |v: u8| ((v as u32 * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

/// Smallest input side [`input_size_for`] picks: at 64 px MobileNetV2's last feature map is 2×2.
/// On a CPU the first embedding pass sets the pace, and its cost grows with the square of the side:
/// on 20,000 Fashion-MNIST images of 28 px with two kinds of positive at 1 % (`binann
/// bench-recall`, 5 labels/s), 64 px instead of 96 px covered 38 % of the folder instead of 10 %
/// by the time #positives labels were given, and recall after 2 × #positives labels rose from
/// 0.17–0.36 to 0.64. Upscaling a 28-pixel image further adds no information.
pub const AUTO_INPUT_MIN: u32 = 64;
/// Largest input side [`input_size_for`] picks: the backbone's own (it was trained at 224 px).
pub const AUTO_INPUT_MAX: u32 = 224;

/// The median of a sample of image sides (the upper one of an even sample); None for no sample.
pub fn median_side(sides: &[u32]) -> Option<u32> {
    let mut sorted = sides.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// The network input side that fits images whose median shorter side is `median` (see
/// [`median_side`]): clamped to [`AUTO_INPUT_MIN`]..=[`AUTO_INPUT_MAX`] and rounded to a multiple
/// of 32 (MobileNetV2 halves the resolution five times). Upscaling small images past that only
/// costs time (the network's cost grows with the square of the side), and photos gain little above
/// the backbone's own 224 px. No readable sample: [`AUTO_INPUT_MAX`].
pub fn input_size_for(median: Option<u32>) -> u32 {
    let Some(median) = median else { return AUTO_INPUT_MAX };
    let clamped = median.clamp(AUTO_INPUT_MIN, AUTO_INPUT_MAX);
    ((clamped + 16) / 32 * 32).clamp(AUTO_INPUT_MIN, AUTO_INPUT_MAX)
}

/// The shorter side of an image, read from its header only (no decoding).
pub fn shorter_side(path: &Path) -> Option<u32> {
    let (w, h) = ImageReader::open(path).ok()?.with_guessed_format().ok()?.into_dimensions().ok()?;
    Some(w.min(h))
}

#[cfg(test)]
mod tests {
    #[test]
    fn auto_input_size_follows_the_median_side_within_bounds() {
        assert_eq!(super::input_size_for(super::median_side(&[])), 224);
        assert_eq!(super::input_size_for(super::median_side(&[28; 50])), 64, "tiny images: the floor");
        assert_eq!(super::input_size_for(super::median_side(&[90; 5])), 96);
        assert_eq!(super::input_size_for(super::median_side(&[3000, 4000, 2000])), 224, "photos: the backbone's own size");
        assert_eq!(super::input_size_for(super::median_side(&[150, 150, 150, 28, 4000])), 160, "the median, rounded to 32");
        assert_eq!(super::input_size_for(super::median_side(&[128, 120, 130])), 128);
        for side in [1, 50, 97, 111, 113, 200, 223, 225, 10_000] {
            let size = super::input_size_for(super::median_side(&[side]));
            assert!((64..=224).contains(&size) && size.is_multiple_of(32), "{side} -> {size}");
        }
    }

    use super::*;
    use image::{GrayImage, Luma, Rgba, RgbaImage};

    #[test]
    fn grey_image_is_replicated_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grey.png");
        GrayImage::from_pixel(10, 6, Luma([255])).save(&path).unwrap();
        let values = Preprocess { size: 4 }.load_image(&path).unwrap();
        assert_eq!(values.len(), 3 * 16);
        for c in 0..3 {
            let expected = (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            assert!(values[c * 16..(c + 1) * 16].iter().all(|v| (v - expected).abs() < 1e-5));
        }
    }

    #[test]
    fn layout_is_chw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("red.png");
        RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 0])).save(&path).unwrap();
        let values = Preprocess { size: 2 }.load_image(&path).unwrap();
        let red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        let green = (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1];
        assert!(values[..4].iter().all(|v| (v - red).abs() < 1e-5));
        assert!(values[4..8].iter().all(|v| (v - green).abs() < 1e-5));
    }

    #[test]
    fn transparent_pixels_become_white() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clear.png");
        RgbaImage::from_pixel(3, 3, Rgba([0, 0, 0, 0])).save(&path).unwrap();
        let values = Preprocess { size: 3 }.load_image(&path).unwrap();
        let white = (1.0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2];
        assert!((values[2 * 9] - white).abs() < 1e-5);
    }

    #[test]
    fn corrupt_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.jpg");
        let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0];
        bytes.extend_from_slice(b"garbage that is not a jpeg body");
        std::fs::write(&path, bytes).unwrap();
        let err = Preprocess { size: 8 }.load_image(&path).unwrap_err();
        assert!(format!("{err:#}").contains("broken.jpg"), "{err:#}");

        let missing = Preprocess { size: 8 }.load_image(&dir.path().join("absent.png")).unwrap_err();
        assert!(format!("{missing:#}").contains("absent.png"), "{missing:#}");
    }

    #[test]
    fn oversized_image_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.png");
        // A valid PNG header claiming 20000x20000 pixels; the body never gets read.
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png).write_image(&[0u8; 4], 2, 2, image::ExtendedColorType::L8).unwrap();
        png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32fast::hash(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(&path, png).unwrap();
        let err = format!("{:#}", Preprocess { size: 8 }.load_image(&path).unwrap_err());
        assert!(err.contains("bomb.png"), "{err}");
        assert!(err.to_lowercase().contains("limit"), "{err}");
    }

    use image::ImageEncoder;
}
