//! [`ExtractorContract`]: what an image index records about the feature extractor that codes its
//! images, with the [`InputLayout`] and [`PixelRange`] it feeds the model.
//!
//! These are milan's own types, so that the API does not change when the on-disk record does:
//! `store` converts them to and from the format's `ModelRecord` when it reads or writes an index.

use std::fmt;
use std::str::FromStr;

/// Where the channel axis of the extractor's input sits. Written and parsed as `nchw` / `nhwc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputLayout {
    /// `[batch, channels, height, width]`.
    Nchw,
    /// `[batch, height, width, channels]`.
    Nhwc,
}

/// How RGB pixels are scaled before they reach the model. Written and parsed as `0..1`, `-1..1`
/// or `imagenet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelRange {
    /// RGB divided by 255.
    ZeroOne,
    /// RGB scaled to -1..1.
    MinusOneOne,
    /// RGB divided by 255, then normalised with the ImageNet mean and standard deviation.
    ImageNet,
}

/// A name that [`InputLayout`] or [`PixelRange`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?}: use {expected}")]
pub struct UnknownName {
    /// What was being parsed (`layout`, `pixel range`).
    pub what: &'static str,
    /// The text given.
    pub text: String,
    /// The names accepted, for the message.
    pub expected: &'static str,
}

impl InputLayout {
    const NAMES: [(&'static str, InputLayout); 2] =
        [("nchw", InputLayout::Nchw), ("nhwc", InputLayout::Nhwc)];

    /// The name `FromStr` reads: `nchw` or `nhwc`.
    pub fn name(self) -> &'static str {
        name_of(&Self::NAMES, self)
    }
}

impl PixelRange {
    const NAMES: [(&'static str, PixelRange); 3] = [
        ("0..1", PixelRange::ZeroOne),
        ("-1..1", PixelRange::MinusOneOne),
        ("imagenet", PixelRange::ImageNet),
    ];

    /// The name `FromStr` reads: `0..1`, `-1..1` or `imagenet`.
    pub fn name(self) -> &'static str {
        name_of(&Self::NAMES, self)
    }
}

fn name_of<T: PartialEq + Copy>(names: &[(&'static str, T)], value: T) -> &'static str {
    names
        .iter()
        .find(|(_, known)| *known == value)
        .map(|(name, _)| *name)
        .expect("every value has a name")
}

fn parse<T: Copy>(
    names: &[(&'static str, T)],
    text: &str,
    what: &'static str,
    expected: &'static str,
) -> Result<T, UnknownName> {
    names
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| UnknownName {
            what,
            text: text.to_owned(),
            expected,
        })
}

impl FromStr for InputLayout {
    type Err = UnknownName;
    fn from_str(text: &str) -> Result<InputLayout, UnknownName> {
        parse(&Self::NAMES, text, "layout", "nchw or nhwc")
    }
}

impl FromStr for PixelRange {
    type Err = UnknownName;
    fn from_str(text: &str) -> Result<PixelRange, UnknownName> {
        parse(&Self::NAMES, text, "pixel range", "0..1, -1..1 or imagenet")
    }
}

impl fmt::Display for InputLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for PixelRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The feature extractor an image index is bound to: the model (by the BLAKE3 fingerprint of its
/// file) and how images are fed to it and features read from it.
///
/// An `extract::Extractor` reports its contract; an index created with `IndexBuilder::images`
/// (both with the `images` feature) stores it and refuses extractors whose contract differs. `Display` gives the one-line summary that `milan index info` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractorContract {
    /// BLAKE3 of the ONNX model file's bytes.
    pub fingerprint: [u8; 32],
    /// The model file when the index was made (a hint for later runs; the fingerprint decides).
    pub path: String,
    /// Input tensor name.
    pub input: String,
    /// Input layout.
    pub layout: InputLayout,
    /// Input height and width in pixels.
    pub size: u32,
    /// Pixel scaling.
    pub pixel_range: PixelRange,
    /// Output tensor name.
    pub output: String,
    /// Feature dimension (after global average pooling of a 4-D output).
    pub dim: u32,
}

impl ExtractorContract {
    /// The first 8 bytes of the fingerprint in hex, as messages show it.
    pub fn short_fingerprint(&self) -> String {
        crate::index::hex(&self.fingerprint[..8])
    }

    /// Floats in one image's input: three channels of `size` x `size`.
    pub fn input_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }
}

impl fmt::Display for ExtractorContract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (model {}), input {:?} {} {}x{} pixels in {}, output {:?} of {} dimensions",
            self.path,
            self.short_fingerprint(),
            self.input,
            self.layout,
            self.size,
            self.size,
            self.pixel_range,
            self.output,
            self.dim
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for layout in [InputLayout::Nchw, InputLayout::Nhwc] {
            assert_eq!(layout.to_string().parse::<InputLayout>(), Ok(layout));
        }
        for range in [
            PixelRange::ZeroOne,
            PixelRange::MinusOneOne,
            PixelRange::ImageNet,
        ] {
            assert_eq!(range.to_string().parse::<PixelRange>(), Ok(range));
        }
        let err = "NCHW".parse::<InputLayout>().unwrap_err();
        assert_eq!(err.to_string(), "unknown layout \"NCHW\": use nchw or nhwc");
        let err = "0-1".parse::<PixelRange>().unwrap_err();
        assert!(
            err.to_string().contains("use 0..1, -1..1 or imagenet"),
            "{err}"
        );
    }
}
