//! How large an image binann agrees to decode, checked from its header before a pixel is decoded.
//!
//! A file's size says little about its decoded size: a PNG of 16,384 × 16,384 grey pixels, all
//! zero, is 260 KB on disk and 256 MiB decoded. Every decoder in binann (the server's seed check,
//! the trainer's and the inferrer's preprocessing, binann-predict) opens images through
//! [`ImageLimits::open`], which reads the header, refuses what is over the limits with the
//! picture's dimensions in the message, and only then hands out the decoder, itself bounded by
//! the same limits as [`image::Limits`].
//!
//! - [`ImageLimits::DATASET`]: dataset images, decoded one per core by the trainer and the
//!   inferrer.
//! - [`ImageLimits::SEED`]: seed images, decoded by the server, which must stay small beside
//!   everything else it holds.

use std::io::{BufRead, Seek};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// The largest image a decoder may take: each side, the pixel count and the decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Widest or tallest image, in pixels.
    pub max_side: u32,
    /// Most pixels (width × height).
    pub max_pixels: u64,
    /// Most bytes of the decoded image (pixels × bytes per pixel of its colour type).
    pub max_decode_bytes: u64,
}

impl ImageLimits {
    /// Dataset images (the trainer, the inferrer, binann-predict). The side is what the trainer
    /// has always refused beyond; the bytes are the image crate's own default budget, which a
    /// 16,384 × 16,384 grey image (256 MiB) or a 100-megapixel RGB photo (300 MB) fits. The pixel
    /// count adds nothing beyond the side: whatever a dataset holds is labelled as it is.
    pub const DATASET: Self = Self { max_side: 16_384, max_pixels: 16_384 * 16_384, max_decode_bytes: 512 << 20 };

    /// Seed images, which the server decodes to check them. 64 Mi pixels (67 megapixels) takes
    /// any camera photo a person is likely to give: 50 MP (8,688 × 5,792), 61 MP (9,504 × 6,336)
    /// and the 64 MP phones' full-resolution mode (9,248 × 6,936). 256 MiB is such a picture in
    /// RGBA, 8 bits a channel; a 16-bit one is refused above 44 megapixels. With at most two
    /// decodes at once (`binann_server::seeds::MAX_CONCURRENT_DECODES`), the server's decoded
    /// seeds never hold more than 512 MiB together, where eight 16,384 × 16,384 bombs at once
    /// took it to 2 GiB. The side stays the trainer's, so a seed the server keeps is one the
    /// trainer reads: every limit here is at most [`ImageLimits::DATASET`]'s.
    pub const SEED: Self = Self { max_side: 16_384, max_pixels: 64 << 20, max_decode_bytes: 256 << 20 };

    /// The same limits for the image crate's decoders (the pixel count has no field there;
    /// [`ImageLimits::check`] covers it).
    pub fn image_limits(&self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_side);
        limits.max_image_height = Some(self.max_side);
        limits.max_alloc = Some(self.max_decode_bytes);
        limits
    }

    /// Whether a `width × height` image taking `decode_bytes` once decoded is within the limits.
    pub fn check(&self, width: u32, height: u32, decode_bytes: u64) -> Result<(), TooLarge> {
        let exceeded = if width > self.max_side || height > self.max_side {
            Exceeded::Side { max: self.max_side }
        } else if u64::from(width) * u64::from(height) > self.max_pixels {
            Exceeded::Pixels { max: self.max_pixels }
        } else if decode_bytes > self.max_decode_bytes {
            Exceeded::Bytes { bytes: decode_bytes, max: self.max_decode_bytes }
        } else {
            return Ok(());
        };
        Err(TooLarge { width, height, exceeded })
    }

    /// Reads the header of the image in `reader` (its format already guessed or set), checks it
    /// against the limits and returns its decoder, bounded by them too. Nothing is decoded yet.
    pub fn open<'a, R: BufRead + Seek + 'a>(&self, mut reader: ImageReader<R>) -> Result<Opened<'a>, ImageLimitError> {
        let format = reader.format();
        // The side limits are left out while the header is read so that an image over them is
        // refused below, naming its dimensions, rather than with the image crate's bare
        // "exceeds limit"; the byte budget bounds whatever the header parsing allocates.
        let mut header_limits = image::Limits::default();
        header_limits.max_alloc = Some(self.max_decode_bytes);
        reader.limits(header_limits);
        let mut decoder: Box<dyn ImageDecoder + 'a> = Box::new(reader.into_decoder()?);
        let (width, height) = decoder.dimensions();
        // Not every decoder enforces max_alloc itself; the output buffer's size is known up front.
        self.check(width, height, decoder.total_bytes())?;
        decoder.set_limits(self.image_limits())?;
        let format = format.ok_or_else(|| image::ImageError::Unsupported(image::error::ImageFormatHint::Unknown.into()))?;
        Ok(Opened { format, width, height, decoder })
    }

    /// [`ImageLimits::open`] for an image held in memory, its format guessed from its bytes.
    pub fn open_bytes<'a>(&self, bytes: &'a [u8]) -> Result<Opened<'a>, ImageLimitError> {
        let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(image::ImageError::IoError)?;
        self.open(reader)
    }
}

/// An image whose header passed [`ImageLimits::open`], ready to decode.
pub struct Opened<'a> {
    /// Its format.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Its decoder, bounded by the limits.
    pub decoder: Box<dyn ImageDecoder + 'a>,
}

impl Opened<'_> {
    /// Decodes the image (EXIF orientation not applied).
    pub fn decode(self) -> Result<DynamicImage, image::ImageError> {
        DynamicImage::from_decoder(self.decoder)
    }
}

impl std::fmt::Debug for Opened<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("format", &self.format).field("width", &self.width).field("height", &self.height).finish()
    }
}

/// Which limit an image is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// A side is longer than `max` pixels.
    Side {
        /// The limit.
        max: u32,
    },
    /// More than `max` pixels.
    Pixels {
        /// The limit.
        max: u64,
    },
    /// Decoded, it would take `bytes`, more than `max`.
    Bytes {
        /// What it would take.
        bytes: u64,
        /// The limit.
        max: u64,
    },
}

/// An image over the limits, found from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{width}x{height} pixels is too large: {}", match .exceeded {
    Exceeded::Side { max } => format!("a side is longer than {max} pixels"),
    Exceeded::Pixels { max } => format!("more than {:.0} megapixels", *max as f64 / 1e6),
    Exceeded::Bytes { bytes, max } => format!("decoding it takes {} MiB, more than {} MiB", bytes.div_ceil(1 << 20), max >> 20),
})]
pub struct TooLarge {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Which limit.
    pub exceeded: Exceeded,
}

/// Why [`ImageLimits::open`] gave no decoder.
#[derive(Debug, thiserror::Error)]
pub enum ImageLimitError {
    /// Over the limits.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// Not an image the image crate reads: unknown format, a broken header, or reading failed.
    #[error("{0}")]
    Image(#[from] image::ImageError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: image::ExtendedColorType) -> Vec<u8> {
        use image::ImageEncoder;
        let bytes = vec![0u8; width as usize * height as usize * color.bits_per_pixel() as usize / 8];
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out).write_image(&bytes, width, height, color).unwrap();
        out
    }

    #[test]
    fn seeds_are_never_allowed_more_than_dataset_images() {
        // A seed the server keeps must be one the trainer can read.
        let (seed, dataset) = (ImageLimits::SEED, ImageLimits::DATASET);
        assert!(seed.max_side <= dataset.max_side);
        assert!(seed.max_pixels <= dataset.max_pixels);
        assert!(seed.max_decode_bytes <= dataset.max_decode_bytes);
        // A 50-megapixel RGB photo is a seed; the 16,384² grey bomb is not, though a dataset
        // image of that size is read as before.
        assert_eq!(seed.check(8_688, 5_792, 8_688 * 5_792 * 3), Ok(()));
        assert_eq!(seed.check(9_248, 6_936, 9_248 * 6_936 * 4), Ok(()), "64 MP, RGBA");
        assert!(matches!(seed.check(16_384, 16_384, 1 << 28), Err(TooLarge { exceeded: Exceeded::Pixels { .. }, .. })));
        assert_eq!(dataset.check(16_384, 16_384, 1 << 28), Ok(()));
    }

    #[test]
    fn each_limit_is_named_with_the_dimensions() {
        let limits = ImageLimits { max_side: 100, max_pixels: 1_000, max_decode_bytes: 2_000 };
        let side = limits.check(101, 1, 303).unwrap_err();
        assert_eq!(side.exceeded, Exceeded::Side { max: 100 });
        assert!(side.to_string().starts_with("101x1 pixels"), "{side}");
        assert_eq!(limits.check(1, 101, 3).unwrap_err().exceeded, Exceeded::Side { max: 100 });
        assert_eq!(limits.check(40, 30, 1_200).unwrap_err().exceeded, Exceeded::Pixels { max: 1_000 });
        assert_eq!(limits.check(30, 30, 3_600).unwrap_err().exceeded, Exceeded::Bytes { bytes: 3_600, max: 2_000 });
        assert_eq!(limits.check(100, 10, 2_000), Ok(()), "the limits themselves are allowed");
    }

    #[test]
    fn open_refuses_from_the_header_and_decodes_what_fits() {
        let wide = png(20_000, 1, image::ExtendedColorType::L8);
        let err = ImageLimits::SEED.open_bytes(&wide).unwrap_err();
        assert!(
            matches!(err, ImageLimitError::TooLarge(TooLarge { width: 20_000, height: 1, exceeded: Exceeded::Side { max: 16_384 } })),
            "{err:?}"
        );
        // Within the side and pixel limits, over the bytes: 64 × 64 RGBA 16-bit is 32 KiB.
        let limits = ImageLimits { max_side: 1_000, max_pixels: 1_000_000, max_decode_bytes: 16 << 10 };
        let deep = png(64, 64, image::ExtendedColorType::Rgba16);
        let err = limits.open_bytes(&deep).unwrap_err();
        assert!(matches!(err, ImageLimitError::TooLarge(TooLarge { exceeded: Exceeded::Bytes { bytes: 32_768, .. }, .. })), "{err:?}");

        let small = png(30, 20, image::ExtendedColorType::Rgb8);
        let opened = ImageLimits::SEED.open_bytes(&small).unwrap();
        assert_eq!((opened.format, opened.width, opened.height), (ImageFormat::Png, 30, 20));
        let image = opened.decode().unwrap();
        assert_eq!((image.width(), image.height()), (30, 20));

        assert!(matches!(ImageLimits::SEED.open_bytes(b"not an image"), Err(ImageLimitError::Image(_))));
        assert!(matches!(ImageLimits::SEED.open_bytes(&small[..30]), Err(ImageLimitError::Image(_))), "a cut header");
    }
}
