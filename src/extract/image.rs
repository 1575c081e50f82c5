//! Reading images: decoding with limits, conversion to RGB8, resizing and scaling into the
//! extractor's input layout.
//!
//! Every format the `image` crate decodes is accepted (JPEG, PNG, TIFF, WebP, BMP, the first
//! frame of a GIF). Greyscale becomes grey RGB, 16-bit channels are scaled to 8 bits, CMYK JPEGs
//! are converted by the decoder, and transparent pixels are composited onto white. Images are
//! resized to the model's square input with a bilinear (triangle) filter, ignoring the aspect
//! ratio, as Keras' `target_size` does.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits, RgbImage};
use milan_index_format::{PixelRange, TensorLayout};

/// Largest width or height decoded: far beyond any photograph, far below a decompression bomb.
pub const MAX_SIDE: u32 = 30_000;
/// Most memory one decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Why an image was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    /// The file is empty.
    #[error("empty file")]
    Empty,
    /// Not an image, or a format milan does not decode.
    #[error("not an image in a supported format (JPEG, PNG, TIFF, WebP, BMP, GIF): {0}")]
    Unsupported(String),
    /// The decoder failed: a truncated or damaged file.
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
    /// Larger than the decoding limits.
    #[error("too large to decode safely: {0}")]
    TooLarge(String),
}

impl SkipReason {
    /// A short stable name for summaries (`unreadable`, `empty`, `unsupported`, `corrupt`, `too_large`).
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::Unreadable(_) => "unreadable",
            SkipReason::Empty => "empty",
            SkipReason::Unsupported(_) => "unsupported",
            SkipReason::Corrupt(_) => "corrupt",
            SkipReason::TooLarge(_) => "too_large",
        }
    }
}

/// A decoded image with the BLAKE3 hash of its file's bytes.
pub struct Decoded {
    /// The pixels.
    pub image: RgbImage,
    /// BLAKE3 of the file.
    pub content_hash: [u8; 32],
}

/// Reads and decodes an image file.
pub fn read_image(path: &Path) -> Result<Decoded, SkipReason> {
    let bytes = std::fs::read(path).map_err(|err| SkipReason::Unreadable(err.to_string()))?;
    let content_hash = *blake3::hash(&bytes).as_bytes();
    Ok(Decoded {
        image: decode(&bytes)?,
        content_hash,
    })
}

/// Decodes image bytes to RGB8.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, SkipReason> {
    if bytes.is_empty() {
        return Err(SkipReason::Empty);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| SkipReason::Unreadable(err.to_string()))?;
    if reader.format().is_none() {
        return Err(SkipReason::Unsupported(
            "unrecognised file signature".into(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(classify)?;
    Ok(to_rgb(image))
}

fn classify(err: image::ImageError) -> SkipReason {
    match err {
        image::ImageError::Limits(limit) => SkipReason::TooLarge(limit.to_string()),
        image::ImageError::Unsupported(what) => SkipReason::Unsupported(what.to_string()),
        other => SkipReason::Corrupt(other.to_string()),
    }
}

/// RGB8, transparent pixels composited onto white.
fn to_rgb(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (out, pixel) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u32::from(pixel[3]);
        for c in 0..3 {
            let blended = (u32::from(pixel[c]) * alpha + 255 * (255 - alpha) + 127) / 255;
            out[c] = blended as u8;
        }
    }
    rgb
}

/// Resizes `image` to `size` x `size` and writes it, scaled per `range`, into `out` (length
/// `3 * size * size`) in `layout` order.
pub fn write_input(
    image: &RgbImage,
    size: u32,
    layout: TensorLayout,
    range: PixelRange,
    out: &mut [f32],
) {
    let resized;
    let image = if image.width() == size && image.height() == size {
        image
    } else {
        resized = image::imageops::resize(image, size, size, FilterType::Triangle);
        &resized
    };
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    let plane = (size * size) as usize;
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            let unit = f32::from(pixel[c]) / 255.0;
            let value = match range {
                PixelRange::ZeroOne => unit,
                PixelRange::MinusOneOne => unit * 2.0 - 1.0,
                PixelRange::ImageNet => (unit - MEAN[c]) / STD[c],
            };
            let at = match layout {
                TensorLayout::Nhwc => i * 3 + c,
                TensorLayout::Nchw => c * plane + i,
            };
            out[at] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(image: DynamicImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn greyscale_alpha_and_sixteen_bit_become_rgb8() {
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 2, image::Luma([100])));
        assert_eq!(
            decode(&png(grey)).unwrap().get_pixel(0, 0).0,
            [100, 100, 100]
        );
        let clear = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            2,
            2,
            image::Rgba([0, 0, 0, 0]),
        ));
        assert_eq!(
            decode(&png(clear)).unwrap().get_pixel(1, 1).0,
            [255, 255, 255]
        );
        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            2,
            2,
            image::Rgb([65535u16, 0, 32896]),
        ));
        assert_eq!(decode(&png(deep)).unwrap().get_pixel(0, 0).0, [255, 0, 128]);
    }

    #[test]
    fn bad_bytes_are_named() {
        assert_eq!(decode(&[]), Err(SkipReason::Empty));
        assert!(matches!(
            decode(b"hello world, not an image"),
            Err(SkipReason::Unsupported(_))
        ));
        let mut truncated = png(DynamicImage::ImageRgb8(RgbImage::new(64, 64)));
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(decode(&truncated), Err(SkipReason::Corrupt(_))));
    }

    #[test]
    fn layouts_and_ranges() {
        let image = RgbImage::from_fn(2, 2, |x, _| {
            image::Rgb([if x == 0 { 255 } else { 0 }, 0, 51])
        });
        let mut nchw = vec![0.0; 12];
        write_input(
            &image,
            2,
            TensorLayout::Nchw,
            PixelRange::ZeroOne,
            &mut nchw,
        );
        assert_eq!(
            nchw,
            vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.2]
        );
        let mut nhwc = vec![0.0; 12];
        write_input(
            &image,
            2,
            TensorLayout::Nhwc,
            PixelRange::MinusOneOne,
            &mut nhwc,
        );
        assert!((nhwc[0] - 1.0).abs() < 1e-6 && (nhwc[3] + 1.0).abs() < 1e-6);
        let mut imagenet = vec![0.0; 12];
        write_input(
            &image,
            2,
            TensorLayout::Nchw,
            PixelRange::ImageNet,
            &mut imagenet,
        );
        assert!((imagenet[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
    }
}
