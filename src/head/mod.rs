//! [`HashHead`]: turns feature vectors into binary codes.
//!
//! A head is a small network of dense layers with LeakyReLU between them; bit `i` of the code is
//! set where output `i` of the last layer is positive (MiLaN's sigmoid above 0.5). Random-hyperplane
//! LSH ([`HashHead::lsh`]) is the one-layer case, a baseline that works before any training. The
//! file format is `milan_index_format::HeadFile`.
//!
//! The engine reads and checks heads (an index stores the head it codes images with); running
//! one on features, drawing an LSH head and writing head files need the `images` feature.

use std::path::Path;

use milan_index_format::HeadFile;
#[cfg(feature = "images")]
use milan_index_format::{DenseLayer, HEAD_MAGIC, HEAD_VERSION};
#[cfg(feature = "images")]
use ndarray::{Array2, ArrayView2, Axis};
#[cfg(feature = "images")]
use rand::SeedableRng;
#[cfg(feature = "images")]
use rand_chacha::ChaCha8Rng;
#[cfg(feature = "images")]
use rand_distr::{Distribution, StandardNormal};

#[cfg(feature = "images")]
use crate::code::Code;
use crate::contract::ExtractorContract;
use crate::error::{Error, ExtractError, Result};

/// Room a head file needs besides its weights: its header, provenance and length prefixes.
#[cfg(feature = "images")]
const HEAD_FRAMING_BYTES: u64 = 1 << 16;

/// Refuses a head whose weights a head file cannot hold, before they are allocated or encoded,
/// naming the sizes instead of failing to decode bytes that were never a file.
#[cfg(feature = "images")]
fn check_head_size(bits: u32, input_dim: u32, weight_bytes: u64) -> Result<()> {
    let max = milan_index_format::MAX_HEAD_BYTES as u64 - HEAD_FRAMING_BYTES;
    if weight_bytes > max {
        return Err(Error::InvalidArgument {
            detail: format!(
                "a {bits}-bit head for {input_dim}-dimensional features would hold {weight_bytes} \
                 bytes of weights, more than the {max} a head file holds; use fewer bits or a \
                 smaller feature dimension"
            ),
        });
    }
    Ok(())
}

/// Why a hash head cannot code an extractor's features
/// ([`HashHead::check_contract`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadMismatch {
    /// The head takes features of another dimension than the extractor gives.
    #[error("the hash head takes {head}-dimensional features but output {output:?} of the model gives {model}")]
    Dimension {
        /// The head's input dimension.
        head: u32,
        /// The extractor's output tensor.
        output: String,
        /// The extractor's feature dimension.
        model: u32,
    },
    /// The head was made for another extractor.
    #[error(
        "the hash head was made for another extractor (model {}, output {:?}) than {model} (model {}, output {output:?})",
        crate::index::hex(&made_for.fingerprint[..8]),
        made_for.output,
        crate::index::hex(&fingerprint[..8])
    )]
    Extractor {
        /// The extractor the head was made for (boxed: it keeps the error small).
        made_for: Box<ExtractorBinding>,
        /// The extractor's model file.
        model: String,
        /// The extractor's model fingerprint.
        fingerprint: [u8; 32],
        /// The extractor's output tensor.
        output: String,
    },
}

/// A hash head and its encoded bytes.
#[derive(Debug, Clone)]
pub struct HashHead {
    file: HeadFile,
    bytes: Vec<u8>,
}

/// The extractor a head is made for: its fingerprint and output name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractorBinding {
    /// BLAKE3 of the ONNX model file.
    pub fingerprint: [u8; 32],
    /// The output the features come from.
    pub output: String,
}

impl HashHead {
    /// Reads and checks a head file.
    pub fn read(path: impl AsRef<Path>) -> Result<HashHead> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        HashHead::from_bytes(bytes).map_err(|err| match err {
            Error::Extract(ExtractError::BadHead { detail, .. }) => {
                Error::Extract(ExtractError::BadHead {
                    path: path.to_path_buf(),
                    detail,
                })
            }
            other => other,
        })
    }

    /// A head from its encoded bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<HashHead> {
        let file = HeadFile::decode(&bytes).map_err(|err| {
            Error::Extract(ExtractError::BadHead {
                path: Default::default(),
                detail: err.to_string(),
            })
        })?;
        Ok(HashHead { file, bytes })
    }

    /// A head from a checked file structure.
    #[cfg(feature = "images")]
    pub(crate) fn from_file(file: HeadFile) -> Result<HashHead> {
        let weight_bytes: u64 = file
            .layers
            .iter()
            .map(|layer| 4 * (layer.weights.len() as u64 + layer.bias.len() as u64))
            .sum();
        check_head_size(file.bits, file.input_dim, weight_bytes)?;
        HashHead::from_bytes(file.encode())
    }

    /// Random-hyperplane LSH: `bits` hyperplanes through `mean` (or the origin), drawn from a
    /// standard normal with `seed`.
    #[cfg(feature = "images")]
    pub fn lsh(
        bits: u32,
        dim: u32,
        seed: u64,
        mean: Option<&[f32]>,
        extractor: Option<ExtractorBinding>,
    ) -> Result<HashHead> {
        if dim == 0 {
            return Err(Error::InvalidArgument {
                detail: "feature dimension must be at least 1".into(),
            });
        }
        if let Some(mean) = mean {
            if mean.len() != dim as usize {
                return Err(Error::Extract(ExtractError::FeatureDim {
                    expected: dim,
                    got: mean.len() as u32,
                }));
            }
        }
        check_head_size(
            bits,
            dim,
            4 * (u64::from(bits) * u64::from(dim) + u64::from(bits)),
        )?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let weights: Vec<f32> = (0..bits as usize * dim as usize)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        // w . (x - mean) = w . x - w . mean: the centring folds into the bias.
        let bias = (0..bits as usize)
            .map(|row| match mean {
                Some(mean) => -weights[row * dim as usize..(row + 1) * dim as usize]
                    .iter()
                    .zip(mean)
                    .map(|(w, m)| w * m)
                    .sum::<f32>(),
                None => 0.0,
            })
            .collect();
        let file = HeadFile {
            magic: HEAD_MAGIC,
            version: HEAD_VERSION,
            bits,
            input_dim: dim,
            leaky_slope: 0.2,
            layers: vec![DenseLayer {
                inputs: dim,
                outputs: bits,
                weights,
                bias,
            }],
            extractor_fingerprint: extractor.as_ref().map(|e| e.fingerprint),
            extractor_output: extractor.map(|e| e.output),
            kind: "lsh".into(),
            provenance: format!("{{\"seed\":{seed},\"centred\":{}}}", mean.is_some()),
        };
        HashHead::from_file(file)
    }

    /// Writes the head file: to `PATH.partial` first, then renamed over `path`, so that an
    /// interrupted write never leaves a truncated head where a good one was.
    #[cfg(feature = "images")]
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::report::write_atomically(path.as_ref(), &self.bytes)
    }

    /// The encoded head.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// BLAKE3 of the encoded head.
    #[cfg(feature = "images")]
    pub fn fingerprint(&self) -> [u8; 32] {
        *blake3::hash(&self.bytes).as_bytes()
    }

    /// Code length in bits.
    pub fn bits(&self) -> u32 {
        self.file.bits
    }

    /// Feature dimension expected.
    pub fn input_dim(&self) -> u32 {
        self.file.input_dim
    }

    /// How the head was made (`lsh`, or a training recipe).
    pub fn kind(&self) -> &str {
        &self.file.kind
    }

    /// The extractor the head was made for, if bound to one.
    pub fn extractor(&self) -> Option<ExtractorBinding> {
        Some(ExtractorBinding {
            fingerprint: self.file.extractor_fingerprint?,
            output: self.file.extractor_output.clone().unwrap_or_default(),
        })
    }

    /// Checks that this head codes the features of the extractor with `contract`: their
    /// dimension, and the extractor itself when the head is bound to one.
    pub fn check_contract(&self, contract: &ExtractorContract) -> Result<(), HeadMismatch> {
        if self.input_dim() != contract.dim {
            return Err(HeadMismatch::Dimension {
                head: self.input_dim(),
                output: contract.output.clone(),
                model: contract.dim,
            });
        }
        if let Some(made_for) = self.extractor() {
            if made_for.fingerprint != contract.fingerprint || made_for.output != contract.output {
                return Err(HeadMismatch::Extractor {
                    made_for: Box::new(made_for),
                    model: contract.path.clone(),
                    fingerprint: contract.fingerprint,
                    output: contract.output.clone(),
                });
            }
        }
        Ok(())
    }

    /// How the head was made, as JSON: the settings and data (for a trained head) or the seed
    /// (for LSH).
    pub fn provenance(&self) -> &str {
        &self.file.provenance
    }

    /// The file structure, for the training code that continues from a head.
    #[cfg(any(feature = "train", all(test, feature = "images")))]
    pub(crate) fn file(&self) -> &HeadFile {
        &self.file
    }

    /// The last layer's outputs for each row of `features` (`[n, input_dim]`).
    #[cfg(feature = "images")]
    pub fn logits(&self, features: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        if features.ncols() != self.file.input_dim as usize {
            return Err(Error::Extract(ExtractError::FeatureDim {
                expected: self.file.input_dim,
                got: features.ncols() as u32,
            }));
        }
        if features.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument {
                detail: "features hold NaN or infinite values".into(),
            });
        }
        let slope = self.file.leaky_slope;
        let mut x = features.to_owned();
        for (i, layer) in self.file.layers.iter().enumerate() {
            let w = ArrayView2::from_shape(
                (layer.outputs as usize, layer.inputs as usize),
                &layer.weights,
            )
            .expect("shapes checked at decode");
            let mut y = x.dot(&w.t());
            y += &ndarray::ArrayView1::from(&layer.bias);
            if i + 1 < self.file.layers.len() {
                y.mapv_inplace(|v| if v > 0.0 { v } else { slope * v });
            }
            x = y;
        }
        Ok(x)
    }

    /// The codes of each row of `features`.
    #[cfg(feature = "images")]
    pub fn codes(&self, features: ArrayView2<'_, f32>) -> Result<Vec<Code>> {
        let logits = self.logits(features)?;
        logits
            .axis_iter(Axis(0))
            .map(|row| Code::from_fn(self.bits(), |i| row[i] > 0.0))
            .collect()
    }
}

#[cfg(all(test, feature = "images"))]
mod tests {
    use super::*;

    #[test]
    fn lsh_codes_are_signs_of_centred_projections() {
        let mean = [1.0f32, -1.0, 0.5];
        let head = HashHead::lsh(16, 3, 5, Some(&mean), None).unwrap();
        let again = HashHead::from_bytes(head.as_bytes().to_vec()).unwrap();
        assert_eq!(again.fingerprint(), head.fingerprint());
        let x = ndarray::arr2(&[[2.0f32, 0.0, 1.0], [1.0, -1.0, 0.5]]);
        let codes = head.codes(x.view()).unwrap();
        let w = &head.file().layers[0].weights;
        for bit in 0..16 {
            let projection: f32 = (0..3).map(|j| w[bit * 3 + j] * (x[[0, j]] - mean[j])).sum();
            assert_eq!(codes[0].as_bitslice()[bit], projection > 0.0, "bit {bit}");
        }
        // The mean itself projects to zero everywhere: no bit set.
        assert_eq!(codes[1].as_bitslice().count_ones(), 0);
        assert_ne!(
            HashHead::lsh(16, 3, 6, None, None).unwrap().fingerprint(),
            head.fingerprint()
        );
        assert!(matches!(
            head.codes(ndarray::Array2::zeros((1, 4)).view()),
            Err(Error::Extract(ExtractError::FeatureDim {
                expected: 3,
                got: 4
            }))
        ));
    }

    #[test]
    fn write_replaces_a_head_whole_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.milanhead");
        std::fs::write(
            &path,
            b"an older, longer file that must not survive in part",
        )
        .unwrap();
        let head = HashHead::lsh(16, 3, 5, None, None).unwrap();
        head.write(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), head.as_bytes());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the head remains");
        let missing = dir.path().join("no-such-folder").join("head.milanhead");
        assert!(
            matches!(head.write(&missing), Err(Error::Io { path, .. }) if path.starts_with(dir.path().join("no-such-folder")))
        );
    }

    #[test]
    fn hidden_layers_use_leaky_relu() {
        let file = HeadFile {
            magic: HEAD_MAGIC,
            version: HEAD_VERSION,
            bits: 8,
            input_dim: 1,
            leaky_slope: 0.5,
            layers: vec![
                DenseLayer {
                    inputs: 1,
                    outputs: 1,
                    weights: vec![1.0],
                    bias: vec![0.0],
                },
                DenseLayer {
                    inputs: 1,
                    outputs: 8,
                    weights: vec![1.0; 8],
                    bias: (0..8).map(|i| -(i as f32) * 0.1).collect(),
                },
            ],
            extractor_fingerprint: None,
            extractor_output: None,
            kind: "test".into(),
            provenance: String::new(),
        };
        let head = HashHead::from_file(file).unwrap();
        let logits = head.logits(ndarray::arr2(&[[-1.0f32]]).view()).unwrap();
        // Hidden: LeakyReLU(-1) = -0.5; output i = -0.5 - 0.1 i.
        assert!((logits[[0, 3]] - (-0.8)).abs() < 1e-6);
    }
}
