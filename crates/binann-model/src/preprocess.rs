//! Image decoding and normalisation into the backbone's input layout. Every decode is bounded by
//! [`ImageLimits::DATASET`], checked from the header first (see [`binann_core::image_limits`]).

use std::io::Read;
use std::path::Path;

use binann_core::image_limits::{Exceeded, ImageLimitError, ImageLimits};
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, ImageError, Result};

/// ImageNet channel means, which the pretrained backbone expects inputs normalised by.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The limits every decode here keeps to: the same for the trainer, the inferrer and
/// binann-predict, which all preprocess through this module.
pub const LIMITS: ImageLimits = ImageLimits::DATASET;
/// Largest accepted image side, in pixels (guards against decompression bombs).
pub const MAX_IMAGE_SIDE: u32 = LIMITS.max_side;
/// Largest decoder allocation, in bytes (guards against decompression bombs).
pub const MAX_DECODE_BYTES: u64 = LIMITS.max_decode_bytes;

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
    /// Returns `3 * size * size` values in CHW order, or [`Error::Image`] naming the file.
    ///
    /// A JPEG whose shorter side is at least twice `size` is decoded at a reduced scale (1/2, 1/4
    /// or 1/8, the largest that keeps the shorter side at least `size`): the DCT does the
    /// shrinking, so a 12-megapixel photo costs a fraction of a full decode. Any trouble with
    /// that decoder falls back to the full one.
    pub fn load_image(&self, path: &Path) -> Result<Vec<f32>> {
        let image = self.decode(path)?;
        Ok(self.normalize(&self.resize(image)))
    }

    /// Like [`Preprocess::load_image`] but always decoding in full (for comparisons: tests and
    /// benchmarks).
    pub fn load_image_full(&self, path: &Path) -> Result<Vec<f32>> {
        let image = decode(path).map_err(|source| Error::Image { path: path.to_owned(), source })?;
        Ok(self.normalize(&self.resize(image)))
    }

    /// The decoded image that [`Preprocess::load_image`] resizes: a JPEG at a reduced scale
    /// where that still leaves its shorter side at least `size`, anything else in full; upright
    /// (EXIF orientation applied).
    pub fn decode(&self, path: &Path) -> Result<DynamicImage> {
        if is_jpeg(path)
            && let Some(image) = decode_jpeg_scaled(path, self.size)
        {
            return Ok(image);
        }
        decode(path).map_err(|source| Error::Image { path: path.to_owned(), source })
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
        // A grey image is resized in its one channel and then copied to three: the same pixels as
        // resizing its RGB copy (the filter treats each channel alone), for a third of the work.
        // Resizing took an eighth of the first pass's CPU on 28-pixel Fashion-MNIST images.
        if let DynamicImage::ImageLuma8(grey) = image {
            let grey =
                if grey.dimensions() == (size, size) { grey } else { image::imageops::resize(&grey, size, size, FilterType::Triangle) };
            return DynamicImage::ImageLuma8(grey).into_rgb8();
        }
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

fn decode(path: &Path) -> Result<DynamicImage, ImageError> {
    let reader = ImageReader::open(path)?.with_guessed_format()?;
    let mut opened = LIMITS.open(reader).map_err(|e| match e {
        ImageLimitError::Image(e) => ImageError::Decode(e),
        ImageLimitError::TooLarge(e) => match e.exceeded {
            Exceeded::Bytes { bytes, .. } => ImageError::TooLarge { width: e.width, height: e.height, bytes },
            // The image crate's own words for a side over its limits, as before the pixel count
            // was checked here too.
            Exceeded::Side { .. } | Exceeded::Pixels { .. } => ImageError::Decode(image::ImageError::Limits(
                image::error::LimitError::from_kind(image::error::LimitErrorKind::DimensionError),
            )),
        },
    })?;
    // Phone photos are stored sideways with an EXIF rotation; apply it like viewers do.
    let orientation = opened.decoder.orientation()?;
    let mut image = opened.decode()?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// True when the file starts with a JPEG start-of-image marker.
fn is_jpeg(path: &Path) -> bool {
    let mut magic = [0u8; 3];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == [0xff, 0xd8, 0xff]
}

/// The DCT scale reduction (2, 4 or 8) to decode a JPEG whose shorter side is `shorter` at, for a
/// `size`-pixel network input: the largest that keeps the shorter side at least `size`. None when
/// even halving would go below it.
pub fn jpeg_reduction(shorter: u32, size: u32) -> Option<u32> {
    [8, 4, 2].into_iter().find(|factor| shorter.div_ceil(*factor) >= size.max(1))
}

/// Decodes a JPEG at the reduced scale [`jpeg_reduction`] picks, with its EXIF orientation
/// applied. `None`: not worth it (small image, or a 12-bit JPEG), or any trouble at all (over
/// the limits, corrupt, an unexpected scale): the full decoder then decodes it, or says why not.
fn decode_jpeg_scaled(path: &Path, size: u32) -> Option<DynamicImage> {
    let bytes = std::fs::read(path).ok()?;
    let mut decoder = jpeg_decoder::Decoder::new(bytes.as_slice());
    decoder.set_max_decoding_buffer_size(LIMITS.max_decode_bytes as usize);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    // The sides and pixels as for any image (the full decoder then says why not); the bytes are
    // those of the reduced decode, which the decoder's buffer limit above bounds.
    if LIMITS.check(width, height, 0).is_err() || info.pixel_format == jpeg_decoder::PixelFormat::L16 {
        return None;
    }
    let factor = jpeg_reduction(width.min(height), size)?;
    // jpeg-decoder picks the smallest scale reaching the requested size on either side; asking
    // for exactly the scaled size of both sides makes that the one chosen here.
    let (want_w, want_h) = (width.div_ceil(factor), height.div_ceil(factor));
    let (out_w, out_h) = decoder.scale(want_w as u16, want_h as u16).ok()?;
    if (u32::from(out_w), u32::from(out_h)) != (want_w, want_h) {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    let (w, h) = (u32::from(out_w), u32::from(out_h));
    let mut image = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, pixels)?),
        jpeg_decoder::PixelFormat::RGB24 => DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels)?),
        jpeg_decoder::PixelFormat::CMYK32 => DynamicImage::ImageRgb8(cmyk_to_rgb(w, h, &pixels)?),
        jpeg_decoder::PixelFormat::L16 => return None,
    };
    let orientation = decoder.exif_data().and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
    image.apply_orientation(orientation);
    Some(image)
}

/// jpeg-decoder's CMYK output (Adobe's inverted convention already undone) to RGB, as the image
/// crate converts it.
fn cmyk_to_rgb(width: u32, height: u32, cmyk: &[u8]) -> Option<RgbImage> {
    let rgb = cmyk
        .chunks_exact(4)
        .flat_map(|p| {
            let k = 255 - u16::from(p[3]);
            [0, 1, 2].map(|c| ((255 - u16::from(p[c])) * k / 255) as u8)
        })
        .collect();
    RgbImage::from_raw(width, height, rgb)
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
/// on 20,000 Fashion-MNIST images of 28 px with two kinds of positive at 1 %
/// (`binann-bench-recall`, 5 labels/s), 64 px instead of 96 px covered 38 % of the folder instead of 10 %
/// by the time #positives labels were given, and recall after 2 × #positives labels rose from
/// 0.17–0.36 to 0.64. Upscaling a 28-pixel image further adds no information.
pub const AUTO_INPUT_MIN: u32 = 64;
/// Largest input side [`input_size_for`] picks, below the backbone's own 224 px. On real
/// photographs (the 1,074 mono ELPV solar cells, 300 px) the embedding ranked as well at 160 px as at
/// 224 px (positives in the top #positives with every label known, logistic regression: 0.809
/// against 0.812 for the defective cells, 0.639 for both on a folder of 3 % defects) while the
/// pass costs half as much: in the loop (5 labels/s) every image was predicted after 6–7 and 11 s
/// instead of 10–12 and 16 s, and recall after 2 × #positives labels on the rare folder was
/// 0.42–0.67 against 0.17–0.50. `BINANN_INPUT_SIZE=224` gives the backbone its own size.
pub const AUTO_INPUT_MAX: u32 = 160;

/// The median of a sample of image sides (the upper one of an even sample); None for no sample.
pub fn median_side(sides: &[u32]) -> Option<u32> {
    let mut sorted = sides.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// The network input side that fits images whose median shorter side is `median` (see
/// [`median_side`]): clamped to [`AUTO_INPUT_MIN`]..=[`AUTO_INPUT_MAX`] and rounded to a multiple
/// of 32 (MobileNetV2 halves the resolution five times). Upscaling small images past that only
/// costs time (the network's cost grows with the square of the side), and photos gained nothing
/// above [`AUTO_INPUT_MAX`]. No readable sample: [`AUTO_INPUT_MAX`].
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
        assert_eq!(super::input_size_for(super::median_side(&[])), 160);
        assert_eq!(super::input_size_for(super::median_side(&[28; 50])), 64, "tiny images: the floor");
        assert_eq!(super::input_size_for(super::median_side(&[90; 5])), 96);
        assert_eq!(super::input_size_for(super::median_side(&[3000, 4000, 2000])), 160, "photos: the ceiling");
        assert_eq!(super::input_size_for(super::median_side(&[300; 9])), 160, "the ELPV cells");
        assert_eq!(super::input_size_for(super::median_side(&[140, 140, 140, 28, 4000])), 128, "the median, rounded to 32");
        assert_eq!(super::input_size_for(super::median_side(&[128, 120, 130])), 128);
        for side in [1, 50, 97, 111, 113, 200, 223, 225, 10_000] {
            let size = super::input_size_for(super::median_side(&[side]));
            assert!((64..=160).contains(&size) && size.is_multiple_of(32), "{side} -> {size}");
        }
    }

    use super::*;
    use image::{GenericImageView, GrayImage, Luma, Rgba, RgbaImage};

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
    fn a_grey_image_resized_in_one_channel_gives_the_pixels_of_its_rgb_copy_resized() {
        // Up (28 px to 64, as Fashion-MNIST), down (300 to 160, as the ELPV cells), and through
        // the area-averaging first step (1000 to 64).
        for (side, size) in [(28, 64), (300, 160), (1000, 64), (64, 64)] {
            let grey = GrayImage::from_fn(side, side, |x, y| Luma([((x * 37 + y * 91 + x * y) % 256) as u8]));
            let preprocess = Preprocess { size };
            let from_grey = preprocess.from_image(DynamicImage::ImageLuma8(grey.clone()));
            let from_rgb = preprocess.from_image(DynamicImage::ImageRgb8(DynamicImage::ImageLuma8(grey).into_rgb8()));
            assert_eq!(from_grey, from_rgb, "{side} px to {size} px");
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
        assert!(matches!(&err, Error::Image { path: p, source: ImageError::Decode(_) } if *p == path), "{err}");
        assert!(err.to_string().contains("broken.jpg"), "{err}");

        let absent = dir.path().join("absent.png");
        let missing = Preprocess { size: 8 }.load_image(&absent).unwrap_err();
        assert!(
            matches!(&missing, Error::Image { path: p, source: ImageError::Io(e) } if *p == absent && e.kind() == std::io::ErrorKind::NotFound),
            "{missing}"
        );
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
        let err = Preprocess { size: 8 }.load_image(&path).unwrap_err();
        // The image crate's own limits catch the side; binann's byte limit catches what they miss.
        assert!(
            matches!(
                &err,
                Error::Image { path: p, source: ImageError::Decode(image::ImageError::Limits(_)) | ImageError::TooLarge { .. } } if *p == path
            ),
            "{err:?}"
        );
    }

    use image::ImageEncoder;

    /// A deterministic photo-like picture: smooth gradients, hard-edged shapes and fine noise.
    fn photo_like(width: u32, height: u32) -> RgbImage {
        let mut seed = 0x9e37_79b9_u32;
        RgbImage::from_fn(width, height, |x, y| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed % 24) as f32 - 12.0;
            let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
            let disc = ((u - 0.4).powi(2) + (v - 0.5).powi(2)) < 0.05;
            let stripe = ((x / 40) % 2 == 0) && v > 0.7;
            let base = [255.0 * u, 255.0 * v, 255.0 * (1.0 - u * v)];
            let px = |c: usize| {
                let value = if disc {
                    [230.0, 40.0, 40.0][c]
                } else if stripe {
                    [20.0, 20.0, 20.0][c]
                } else {
                    base[c]
                };
                (value + noise).clamp(0.0, 255.0) as u8
            };
            image::Rgb([px(0), px(1), px(2)])
        })
    }

    fn save_jpeg(path: &Path, image: &DynamicImage) {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(image).unwrap();
    }

    /// Mean absolute difference of two normalised tensors (a unit is about 57 grey levels).
    fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
    }

    /// Bound on the mean absolute difference between the scaled and the full decode, in
    /// normalised units: about 3 grey levels in 255 (measured: 0.02 to 0.038, most of it the two
    /// paths' different resampling of the picture's fine noise). A wrong orientation, colour
    /// conversion or offset costs ten times that.
    const CLOSE: f32 = 0.05;

    #[test]
    fn reduction_keeps_the_shorter_side_at_least_the_input_size() {
        assert_eq!(jpeg_reduction(3000, 224), Some(8), "12 megapixels: 375 px");
        assert_eq!(jpeg_reduction(1792, 224), Some(8), "exactly 224");
        assert_eq!(jpeg_reduction(1785, 224), Some(8), "224 after rounding up");
        assert_eq!(jpeg_reduction(1784, 224), Some(4));
        assert_eq!(jpeg_reduction(1000, 224), Some(4));
        assert_eq!(jpeg_reduction(500, 224), Some(2));
        assert_eq!(jpeg_reduction(447, 224), Some(2), "224 after rounding up");
        assert_eq!(jpeg_reduction(446, 224), None);
        assert_eq!(jpeg_reduction(28, 96), None);
        assert_eq!(jpeg_reduction(3000, 96), Some(8));
    }

    #[test]
    fn scaled_decode_of_a_large_jpeg_is_close_to_the_full_decode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("photo.jpg");
        save_jpeg(&path, &DynamicImage::ImageRgb8(photo_like(3000, 2000)));
        for (size, reduced) in [(224, (375, 250)), (96, (375, 250)), (448, (750, 500))] {
            let p = Preprocess { size };
            let decoded = p.decode(&path).unwrap();
            assert_eq!(decoded.dimensions(), reduced, "size {size}: decoded at a reduced scale");
            let diff = mean_abs_diff(&p.load_image(&path).unwrap(), &p.load_image_full(&path).unwrap());
            assert!(diff < CLOSE, "size {size}: mean abs difference {diff}");
        }
    }

    #[test]
    fn grey_jpeg_is_scaled_and_replicated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grey.jpg");
        let grey = DynamicImage::ImageRgb8(photo_like(1200, 1600)).to_luma8();
        jpeg_encoder::Encoder::new_file(&path, 90).unwrap().encode(grey.as_raw(), 1200, 1600, jpeg_encoder::ColorType::Luma).unwrap();
        let p = Preprocess { size: 224 };
        let decoded = p.decode(&path).unwrap();
        assert_eq!(decoded.dimensions(), (300, 400));
        assert_eq!(decoded.color(), image::ColorType::L8);
        let scaled = p.load_image(&path).unwrap();
        let diff = mean_abs_diff(&scaled, &p.load_image_full(&path).unwrap());
        assert!(diff < CLOSE, "mean abs difference {diff}");
        let plane = 224 * 224;
        for i in (0..plane).step_by(997) {
            let grey: Vec<f32> = (0..3).map(|c| scaled[c * plane + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c]).collect();
            assert!((grey[0] - grey[1]).abs() < 1e-5 && (grey[1] - grey[2]).abs() < 1e-5, "{grey:?}");
        }
    }

    #[test]
    fn progressive_and_cmyk_jpegs_are_scaled_like_the_full_decode() {
        let dir = tempfile::tempdir().unwrap();
        let photo = photo_like(2000, 1500);
        let progressive = dir.path().join("progressive.jpg");
        let mut encoder = jpeg_encoder::Encoder::new_file(&progressive, 90).unwrap();
        encoder.set_progressive(true);
        encoder.encode(photo.as_raw(), 2000, 1500, jpeg_encoder::ColorType::Rgb).unwrap();
        let cmyk_path = dir.path().join("cmyk.jpg");
        // Naive CMYK with full black generation, as print workflows write it.
        let cmyk: Vec<u8> = photo
            .pixels()
            .flat_map(|p| {
                let k = 255 - p.0.iter().copied().max().unwrap();
                let scale = |v: u8| if k == 255 { 0 } else { ((255 - v - k) as u32 * 255 / (255 - k) as u32) as u8 };
                [scale(p[0]), scale(p[1]), scale(p[2]), k]
            })
            .collect();
        jpeg_encoder::Encoder::new_file(&cmyk_path, 90).unwrap().encode(&cmyk, 2000, 1500, jpeg_encoder::ColorType::Cmyk).unwrap();
        let p = Preprocess { size: 224 };
        for path in [progressive, cmyk_path] {
            assert_eq!(p.decode(&path).unwrap().dimensions(), (500, 375), "{}", path.display());
            let full = p.load_image_full(&path).unwrap();
            let diff = mean_abs_diff(&p.load_image(&path).unwrap(), &full);
            assert!(diff < CLOSE, "{}: mean abs difference {diff}", path.display());
            // Against the picture itself (not just the other decoder): the colours are right.
            let truth = p.from_image(DynamicImage::ImageRgb8(photo.clone()));
            let diff = mean_abs_diff(&full, &truth);
            assert!(diff < 2.0 * CLOSE, "{}: full decode against the original, mean abs difference {diff}", path.display());
        }
    }

    /// An EXIF block (big-endian TIFF) holding only an orientation.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut exif = b"MM\0\x2a\0\0\0\x08".to_vec();
        exif.extend_from_slice(&1u16.to_be_bytes()); // one entry
        exif.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        exif.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        exif.extend_from_slice(&1u32.to_be_bytes()); // count
        exif.extend_from_slice(&value.to_be_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, no next IFD
        exif
    }

    #[test]
    fn exif_orientation_is_applied_to_scaled_jpegs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sideways.jpg");
        // Stored sideways: red on the left, blue on the right; orientation 6 turns it a quarter
        // clockwise, so red ends up on top.
        let stored = RgbImage::from_fn(2400, 1600, |x, _| if x < 1200 { image::Rgb([220, 0, 0]) } else { image::Rgb([0, 0, 220]) });
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(std::fs::File::create(&path).unwrap(), 90);
        encoder.set_exif_metadata(exif_orientation(6)).unwrap();
        encoder.encode_image(&stored).unwrap();
        let p = Preprocess { size: 224 };
        assert_eq!(p.decode(&path).unwrap().dimensions(), (400, 600), "scaled by 4, then turned upright");
        for values in [p.load_image(&path).unwrap(), p.load_image_full(&path).unwrap()] {
            let plane = 224 * 224;
            let at = |c: usize, x: usize, y: usize| values[c * plane + y * 224 + x] * IMAGENET_STD[c] + IMAGENET_MEAN[c];
            assert!(at(0, 112, 10) > 0.7 && at(2, 112, 10) < 0.2, "top is red");
            assert!(at(2, 112, 214) > 0.7 && at(0, 112, 214) < 0.2, "bottom is blue");
        }
    }

    #[test]
    fn tiny_and_truncated_jpegs() {
        let dir = tempfile::tempdir().unwrap();
        let p = Preprocess { size: 224 };
        for (w, h) in [(1, 1), (7, 3), (16, 16)] {
            let path = dir.path().join(format!("tiny-{w}x{h}.jpg"));
            save_jpeg(&path, &DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]))));
            let values = p.load_image(&path).unwrap();
            assert_eq!(values.len(), 3 * 224 * 224);
            let white = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
            assert!((values[0] - white).abs() < 0.05, "{w}x{h}: {}", values[0]);
        }

        let whole = dir.path().join("whole.jpg");
        save_jpeg(&whole, &DynamicImage::ImageRgb8(photo_like(2000, 1500)));
        let bytes = std::fs::read(&whole).unwrap();
        let truncated = dir.path().join("truncated.jpg");
        std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 5]).unwrap();
        // Cut inside the image data: it decodes, what is there as in the whole file, the rest grey.
        let cut = p.load_image(&truncated).unwrap();
        let full = p.load_image(&whole).unwrap();
        let plane = 224 * 224;
        let top = |v: &[f32]| -> Vec<f32> { (0..3).flat_map(|c| v[c * plane..c * plane + 224 * 50].to_vec()).collect() };
        let diff = mean_abs_diff(&top(&cut), &top(&full));
        assert!(diff < CLOSE, "the decoded top matches the whole file's: mean abs difference {diff}");
        for c in 0..3 {
            let grey = (128.0 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            let bottom = &cut[c * plane + 224 * 200..(c + 1) * plane];
            assert!(bottom.iter().all(|v| (v - grey).abs() < 0.02), "channel {c}: the missing bottom is grey");
        }
        // Cut inside the header: an error that names the file.
        let headless = dir.path().join("headless.jpg");
        std::fs::write(&headless, &bytes[..300]).unwrap();
        let err = format!("{:#}", p.load_image(&headless).unwrap_err());
        assert!(err.contains("headless.jpg") && err.contains("Jpeg"), "{err}");
    }
}
