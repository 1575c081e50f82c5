//! Reading images: bounded reads of regular files, decoding with limits, conversion to RGB8,
//! resizing and scaling into the extractor's input layout.
//!
//! Every format the `image` crate decodes is accepted (JPEG, PNG, TIFF, WebP, BMP, the first
//! frame of a GIF). Greyscale becomes grey RGB, 16-bit channels are scaled to 8 bits, CMYK JPEGs
//! are converted by the decoder, and transparent pixels are composited onto white. Images are
//! resized to the model's square input with a bilinear (triangle) filter, ignoring the aspect
//! ratio, as Keras' `target_size` does.
//!
//! Only regular files are read (links are followed), never FIFOs, sockets, devices or folders,
//! and none past [`MAX_FILE_BYTES`]. A JPEG whose data ends before its end-of-image marker is
//! refused as truncated (the decoder would fill in the missing part and code garbage) unless
//! [`ReadOptions::lenient`] accepts it; the other decoders refuse truncated files themselves.

use std::io::{Cursor, Read};
use std::path::Path;

use crate::contract::{InputLayout, PixelRange};
use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbImage};

/// Largest width or height decoded: far beyond any photograph, far below a decompression bomb.
pub const MAX_SIDE: u32 = 30_000;
/// Most memory one decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;
/// Largest image file read, in bytes (256 MiB): far beyond any photograph, and a bound on what
/// a file that grows while it is read, or a key naming a device, can make milan read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// How images are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Accept JPEGs that end before their end-of-image marker (the decoder fills in the missing
    /// part in grey). Default false: they are refused as [`SkipReason::Truncated`].
    pub lenient: bool,
}

/// Why an image was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    /// A FIFO, socket, device or folder: only regular files are read.
    #[error("not a regular file ({0}); only regular files are read")]
    NotAFile(String),
    /// The path is not valid UTF-8, so that no key could name the file again.
    #[error("file name is not valid UTF-8")]
    NameNotUtf8,
    /// The file is empty.
    #[error("empty file")]
    Empty,
    /// Not an image, or a format milan does not decode.
    #[error("not an image in a supported format (JPEG, PNG, TIFF, WebP, BMP, GIF): {0}")]
    Unsupported(String),
    /// The file ends before the image does.
    #[error("truncated image: {0}")]
    Truncated(String),
    /// The decoder failed: a damaged file.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// Larger than the file size limit or the decoding limits.
    #[error("too large to decode safely: {0}")]
    TooLarge(String),
}

impl SkipReason {
    /// A short stable name for summaries (`unreadable`, `not_a_file`, `name_not_utf8`, `empty`,
    /// `unsupported`, `truncated`, `corrupt`, `too_large`).
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::Unreadable(_) => "unreadable",
            SkipReason::NotAFile(_) => "not_a_file",
            SkipReason::NameNotUtf8 => "name_not_utf8",
            SkipReason::Empty => "empty",
            SkipReason::Unsupported(_) => "unsupported",
            SkipReason::Truncated(_) => "truncated",
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

/// Reads and decodes an image file, refusing truncated JPEGs.
pub fn read_image(path: &Path) -> Result<Decoded, SkipReason> {
    read_image_with(path, &ReadOptions::default())
}

/// Reads and decodes an image file as `options` say.
pub fn read_image_with(path: &Path, options: &ReadOptions) -> Result<Decoded, SkipReason> {
    let bytes = read_file(path)?;
    let content_hash = *blake3::hash(&bytes).as_bytes();
    Ok(Decoded {
        image: decode_with(&bytes, options)?,
        content_hash,
    })
}

/// The bytes of `path`, when it is a regular file (links followed) of at most
/// [`MAX_FILE_BYTES`].
///
/// The type is checked before the file is opened (opening a FIFO would wait for a writer), the
/// file is opened without waiting where the platform allows, and the type is checked again on
/// the open handle, so that a file swapped for a FIFO or a device in between is refused too;
/// reads then block as usual. At most `MAX_FILE_BYTES + 1` bytes are read, so a file that grows
/// meanwhile stays bounded.
pub fn read_file(path: &Path) -> Result<Vec<u8>, SkipReason> {
    let (file, len) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(len.min(MAX_FILE_BYTES + 1) as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The BLAKE3 hash of `path`'s bytes (the content hash [`read_image`] gives), read as a stream:
/// memory stays small whatever the file's size. The file is opened as [`read_file`] opens it,
/// and refused as too large when more than [`MAX_FILE_BYTES`] can be read from it.
pub(crate) fn hash_file(path: &Path) -> Result<[u8; 32], SkipReason> {
    let (file, _) = open_regular(path)?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(file.take(MAX_FILE_BYTES + 1))
        .map_err(unreadable)?;
    if hasher.count() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    Ok(*hasher.finalize().as_bytes())
}

/// `path` opened for reading as [`read_file`] says, with its length. The handle is switched
/// back to blocking reads after the checks, so that a network or FUSE filesystem cannot fail a
/// read with "try again" (EAGAIN).
fn open_regular(path: &Path) -> Result<(std::fs::File, u64), SkipReason> {
    check_regular(&std::fs::metadata(path).map_err(unreadable)?)?;
    let file = open_without_waiting(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    check_regular(&metadata)?;
    set_blocking(&file).map_err(unreadable)?;
    Ok((file, metadata.len()))
}

fn unreadable(err: std::io::Error) -> SkipReason {
    SkipReason::Unreadable(err.to_string())
}

fn too_big() -> SkipReason {
    SkipReason::TooLarge(format!(
        "the file is larger than {} MiB, the limit on image files",
        MAX_FILE_BYTES >> 20
    ))
}

/// Refuses anything but a regular file, and a regular file over the size limit.
fn check_regular(metadata: &std::fs::Metadata) -> Result<(), SkipReason> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return if metadata.len() > MAX_FILE_BYTES {
            Err(too_big())
        } else {
            Ok(())
        };
    }
    let what = if kind.is_dir() {
        "a folder"
    } else {
        special_kind(&kind)
    };
    Err(SkipReason::NotAFile(what.into()))
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

#[cfg(unix)]
fn open_without_waiting(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    // With O_NONBLOCK, opening a FIFO returns at once instead of waiting for a writer; reads of
    // regular files are not affected.
    options.read(true).custom_flags(libc::O_NONBLOCK);
    options.open(path)
}

#[cfg(not(unix))]
fn open_without_waiting(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// Clears `O_NONBLOCK` on `file`, which [`open_without_waiting`] set for the open alone.
#[cfg(unix)]
fn set_blocking(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file`, which outlives both calls; F_GETFL and
    // F_SETFL only read and change its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_blocking(_: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Decodes image bytes to RGB8 as `options` say.
pub fn decode_with(bytes: &[u8], options: &ReadOptions) -> Result<RgbImage, SkipReason> {
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
    if reader.format() == Some(ImageFormat::Jpeg) && !options.lenient {
        if let Some(detail) = jpeg_cut_short(bytes) {
            return Err(SkipReason::Truncated(detail));
        }
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(classify)?;
    Ok(to_rgb(image))
}

/// Why a JPEG's marker stream ends before its end-of-image marker, or `None` when it reaches it.
///
/// Walks the segments from the start-of-image marker by their lengths; after each start of scan,
/// skips the entropy-coded data (where `FF 00` is a stuffed byte and `FF D0`..`FF D7` restart
/// markers) up to the next marker. Bytes between segments that are not a marker are skipped, as
/// decoders do; anything after the end-of-image marker is ignored.
fn jpeg_cut_short(bytes: &[u8]) -> Option<String> {
    let cut = |place: &str| {
        Some(format!(
            "the JPEG data ends {place}, before its end-of-image marker ({} bytes read); \
             the missing part would be coded as grey",
            bytes.len()
        ))
    };
    let next_ff = |from: usize| {
        bytes
            .get(from..)
            .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
            .map(|offset| from + offset)
    };
    let mut at = 2; // past the start-of-image marker, which guessing the format checked
    loop {
        let Some(marker) = next_ff(at) else {
            return cut("between segments");
        };
        at = marker;
        // Any number of FF fill bytes may precede the marker's code.
        while bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = bytes.get(at + 1) else {
            return cut("inside a marker");
        };
        at += 2;
        match code {
            0xD9 => return None,
            // Markers without a segment: TEM, restarts, start of image, and a stray stuffed byte.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(&[high, low]) = bytes.get(at..at + 2) else {
            return cut("inside a segment header");
        };
        at += usize::from(u16::from_be_bytes([high, low]));
        if at > bytes.len() {
            return cut("inside a segment");
        }
        if code == 0xDA {
            // Start of scan: the entropy-coded data runs to the next marker that is neither a
            // stuffed zero nor a restart.
            loop {
                let Some(ff) = next_ff(at) else {
                    return cut("inside the compressed image data");
                };
                match bytes.get(ff + 1) {
                    None => return cut("inside the compressed image data"),
                    Some(0x00 | 0xD0..=0xD7) => at = ff + 2,
                    Some(0xFF) => at = ff + 1,
                    Some(_) => {
                        at = ff;
                        break;
                    }
                }
            }
        }
    }
}

fn classify(err: image::ImageError) -> SkipReason {
    if ends_early(&err) {
        return SkipReason::Truncated(format!("the file ends early ({err})"));
    }
    match err {
        image::ImageError::Limits(limit) => SkipReason::TooLarge(limit.to_string()),
        image::ImageError::Unsupported(what) => SkipReason::Unsupported(what.to_string()),
        other => SkipReason::Corrupt(other.to_string()),
    }
}

/// Whether the decoder ran out of bytes: an unexpected end of file, as the error or anywhere in
/// its chain of causes.
fn ends_early(err: &image::ImageError) -> bool {
    let eof = |io: &std::io::Error| io.kind() == std::io::ErrorKind::UnexpectedEof;
    if let image::ImageError::IoError(io) = err {
        if eof(io) {
            return true;
        }
    }
    let mut cause = std::error::Error::source(err);
    while let Some(error) = cause {
        if error.downcast_ref::<std::io::Error>().is_some_and(eof) {
            return true;
        }
        cause = error.source();
    }
    false
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
    layout: InputLayout,
    range: PixelRange,
    out: &mut [f32],
) {
    let resized;
    let pixels: &[u8] = if image.width() == size && image.height() == size {
        image.as_raw()
    } else {
        resized = resize(image, size);
        &resized
    };
    // Each channel's 256 possible values, scaled once: the same floats as computing each pixel.
    let table = scaling_table(range);
    match layout {
        InputLayout::Nhwc => {
            for (values, pixel) in out.chunks_exact_mut(3).zip(pixels.chunks_exact(3)) {
                for c in 0..3 {
                    values[c] = table[c][usize::from(pixel[c])];
                }
            }
        }
        InputLayout::Nchw => {
            let plane = (size * size) as usize;
            for (c, channel) in out.chunks_exact_mut(plane).take(3).enumerate() {
                for (value, pixel) in channel.iter_mut().zip(pixels.chunks_exact(3)) {
                    *value = table[c][usize::from(pixel[c])];
                }
            }
        }
    }
}

/// `image` resized to `size` x `size` (RGB8, rows back to back) with a bilinear (triangle)
/// filter, ignoring the aspect ratio. The SIMD resizer gives what `image`'s own triangle filter
/// gives within one 8-bit level (tested below), several times faster.
fn resize(image: &RgbImage, size: u32) -> Vec<u8> {
    use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType};
    use fast_image_resize::{ResizeAlg, ResizeOptions, Resizer};
    let source = ImageRef::new(
        image.width(),
        image.height(),
        image.as_raw(),
        PixelType::U8x3,
    );
    let mut target = Image::new(size, size, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    match source.map(|source| Resizer::new().resize(&source, &mut target, &options)) {
        Ok(Ok(())) => target.into_vec(),
        // Only a buffer of the wrong length or an unsupported type fails, which an RgbImage
        // never is; the reference resizer still gives the right pixels.
        _ => image::imageops::resize(image, size, size, image::imageops::FilterType::Triangle)
            .into_raw(),
    }
}

/// Per channel, the float each 8-bit value becomes under `range`.
fn scaling_table(range: PixelRange) -> [[f32; 256]; 3] {
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    let mut table = [[0.0f32; 256]; 3];
    for (c, channel) in table.iter_mut().enumerate() {
        for (v, value) in channel.iter_mut().enumerate() {
            let unit = v as f32 / 255.0;
            *value = match range {
                PixelRange::ZeroOne => unit,
                PixelRange::MinusOneOne => unit * 2.0 - 1.0,
                PixelRange::ImageNet => (unit - MEAN[c]) / STD[c],
            };
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn decode(bytes: &[u8]) -> Result<RgbImage, SkipReason> {
        decode_with(bytes, &ReadOptions::default())
    }

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
        assert!(matches!(decode(&truncated), Err(SkipReason::Truncated(_))));
    }

    /// A 320 x 240 picture with detail everywhere, so that every third of its file is pixels.
    fn encoded(format: image::ImageFormat) -> Vec<u8> {
        let image = RgbImage::from_fn(320, 240, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(image)
            .write_to(&mut Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    }

    #[test]
    fn truncated_files_are_refused_in_every_format() {
        use image::ImageFormat::*;
        // JPEG by its marker stream (the decoder itself would fill in the rest); PNG, TIFF and
        // BMP by the decoder's unexpected end of file; GIF and WebP decoders fail otherwise.
        for (format, truncated) in [
            (Jpeg, true),
            (Png, true),
            (Tiff, true),
            (Bmp, true),
            (Gif, false),
            (WebP, false),
        ] {
            let bytes = encoded(format);
            assert!(decode(&bytes).is_ok(), "{format:?} whole");
            let third = &bytes[..bytes.len() / 3];
            match decode(third) {
                Err(SkipReason::Truncated(_)) if truncated => {}
                Err(SkipReason::Corrupt(_)) if !truncated => {}
                other => panic!("{format:?} cut to a third: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn a_jpeg_must_reach_its_end_marker_unless_lenient() {
        let bytes = encoded(image::ImageFormat::Jpeg);
        assert_eq!(&bytes[bytes.len() - 2..], &[0xFF, 0xD9]);
        let lenient = ReadOptions { lenient: true };
        for cut in [bytes.len() / 3, bytes.len() * 2 / 3, bytes.len() - 1] {
            let short = &bytes[..cut];
            let err = decode(short).unwrap_err();
            assert!(
                matches!(&err, SkipReason::Truncated(detail) if detail.contains("end-of-image")),
                "{cut}: {err}"
            );
            assert_eq!(err.kind(), "truncated");
            // The decoder itself accepts the file: only --lenient lets it through.
            assert!(decode_with(short, &lenient).is_ok(), "{cut}");
        }
        // Cut inside the headers: truncated too, whatever the decoder would say.
        assert!(matches!(
            decode(&bytes[..40]),
            Err(SkipReason::Truncated(_))
        ));
        // Anything after the end marker is ignored, fill bytes before a marker are allowed.
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"\0\0trailing bytes \xFF");
        assert!(decode(&trailing).is_ok());
        assert_eq!(jpeg_cut_short(&trailing), None);
        let mut filled = bytes[..bytes.len() - 2].to_vec();
        filled.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xD9]);
        assert_eq!(jpeg_cut_short(&filled), None);
        // Restart markers and stuffed zeros inside the scan do not end it.
        let mut restarts = bytes[..bytes.len() - 2].to_vec();
        restarts.extend_from_slice(&[0xFF, 0xD0, 0x12, 0xFF, 0x00, 0x34]);
        assert!(jpeg_cut_short(&restarts).is_some());
        restarts.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(jpeg_cut_short(&restarts), None);
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_file = |path: &Path, what: &str| {
            let err = read_file(path).err();
            assert!(
                matches!(&err, Some(SkipReason::NotAFile(kind)) if kind == what),
                "{}: {err:?}",
                path.display()
            );
        };
        not_a_file(dir.path(), "a folder");
        not_a_file(Path::new("/dev/zero"), "a character device");
        let fifo = dir.path().join("b.png");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Returns at once: the type is checked before the FIFO is opened.
        not_a_file(&fifo, "a FIFO");
        let socket = dir.path().join("s.png");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        not_a_file(&socket, "a socket");
        // A sparse file one byte over the limit is refused without being read.
        let big = dir.path().join("big.png");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        assert!(matches!(read_file(&big), Err(SkipReason::TooLarge(_))));
        let link = dir.path().join("link.png");
        std::fs::write(dir.path().join("small.png"), b"abc").unwrap();
        std::os::unix::fs::symlink("small.png", &link).unwrap();
        assert_eq!(read_file(&link).unwrap(), b"abc");
        assert!(matches!(
            read_file(&dir.path().join("missing.png")),
            Err(SkipReason::Unreadable(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn files_are_read_in_blocking_mode() {
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        std::fs::write(&path, b"abc").unwrap();
        let (file, len) = open_regular(&path).unwrap();
        assert_eq!(len, 3);
        // SAFETY: the descriptor belongs to `file`, open for the whole call.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0);
        assert_eq!(flags & libc::O_NONBLOCK, 0, "O_NONBLOCK left set");
    }

    #[cfg(unix)]
    #[test]
    fn hashing_streams_the_file_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        // Several of the hasher's reads, and not a multiple of any of them.
        let bytes: Vec<u8> = (0..1_000_003u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(hash_file(&path).unwrap(), *blake3::hash(&bytes).as_bytes());
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(hash_file(&empty).unwrap(), *blake3::hash(b"").as_bytes());
        let big = dir.path().join("big.png");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        assert!(matches!(hash_file(&big), Err(SkipReason::TooLarge(_))));
        assert!(matches!(
            hash_file(dir.path()),
            Err(SkipReason::NotAFile(kind)) if kind == "a folder"
        ));
        assert!(matches!(
            hash_file(&dir.path().join("missing.png")),
            Err(SkipReason::Unreadable(_))
        ));
    }

    #[test]
    fn layouts_and_ranges() {
        let image = RgbImage::from_fn(2, 2, |x, _| {
            image::Rgb([if x == 0 { 255 } else { 0 }, 0, 51])
        });
        let mut nchw = vec![0.0; 12];
        write_input(&image, 2, InputLayout::Nchw, PixelRange::ZeroOne, &mut nchw);
        assert_eq!(
            nchw,
            vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.2]
        );
        let mut nhwc = vec![0.0; 12];
        write_input(
            &image,
            2,
            InputLayout::Nhwc,
            PixelRange::MinusOneOne,
            &mut nhwc,
        );
        assert!((nhwc[0] - 1.0).abs() < 1e-6 && (nhwc[3] + 1.0).abs() < 1e-6);
        let mut imagenet = vec![0.0; 12];
        write_input(
            &image,
            2,
            InputLayout::Nchw,
            PixelRange::ImageNet,
            &mut imagenet,
        );
        assert!((imagenet[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
    }

    /// The SIMD resizer against `image`'s triangle filter, which milan used before: every 8-bit
    /// value within one level, and on average far closer.
    #[test]
    fn fast_resize_matches_the_reference_filter_within_one_level() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (width, height, size) in [
            (256, 256, 299),
            (28, 28, 299),
            (640, 480, 299),
            (1000, 50, 32),
            (299, 300, 299),
        ] {
            // Smooth content with noise on top, as photographs have.
            let image = RgbImage::from_fn(width, height, |x, y| {
                let base = ((x * 7 + y * 3) % 256) as i32;
                image::Rgb(
                    [0, 1, 2]
                        .map(|c| (base + c * 40 + rng.random_range(-20..=20)).clamp(0, 255) as u8),
                )
            });
            let fast = resize(&image, size);
            let reference =
                image::imageops::resize(&image, size, size, image::imageops::FilterType::Triangle)
                    .into_raw();
            assert_eq!(fast.len(), reference.len());
            let differences: Vec<i32> = fast
                .iter()
                .zip(&reference)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .collect();
            let worst = differences.iter().max().copied().unwrap_or(0);
            let mean = differences.iter().sum::<i32>() as f64 / differences.len() as f64;
            assert!(
                worst <= 1,
                "{width}x{height} -> {size}: a value {worst} levels away"
            );
            assert!(
                mean < 0.5,
                "{width}x{height} -> {size}: mean difference {mean}"
            );
        }
    }
}
