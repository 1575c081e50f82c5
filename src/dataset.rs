//! Labelled feature sets ("DATA") for training and evaluation: the folder `milan extract` writes,
//! or an index whose items were added with kept features and labels.
//!
//! A DATA folder holds:
//!
//! | file | content |
//! |---|---|
//! | `features.npy` | float32 `[n, d]`, one row per item |
//! | `labels.npy` | int64 `[n]`, the class number of each row |
//! | `classes.txt` | one class name per line: class number `i` on line `i` (from 0) |
//! | `paths.txt` | one key (image path) per line, row order |
//! | `extractor.json` | the extractor contract: model, fingerprint (hex), input, layout, size, pixel range, output, dim |
//!
//! In `classes.txt` and `paths.txt`, a backslash, line feed or carriage return in a name is
//! written `\\`, `\n`, `\r` ([`crate::text::escape_line`]), so that every name takes one line
//! and reads back exactly. [`Dataset::save`] writes each file whole or not at all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use milan_index_format::DATABASE_FILE;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::contract::{ExtractorContract, UnknownName};
use crate::error::{Error, OpenError, Result, TrainError};
use crate::eval::{split_from_lists, split_per_class, Split};
use crate::head::ExtractorBinding;
use crate::index::Index;
use crate::report::{write_atomically, write_atomically_with};
use crate::text::{escape_line, unescape_line};

/// File names inside a DATA folder.
pub const FEATURES_FILE: &str = "features.npy";
/// See [`FEATURES_FILE`].
pub const LABELS_FILE: &str = "labels.npy";
/// See [`FEATURES_FILE`].
pub const CLASSES_FILE: &str = "classes.txt";
/// See [`FEATURES_FILE`].
pub const PATHS_FILE: &str = "paths.txt";
/// See [`FEATURES_FILE`].
pub const EXTRACTOR_FILE: &str = "extractor.json";

/// Labelled feature vectors with their keys and, when known, the extractor that made them.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `[n, d]`.
    pub features: Array2<f32>,
    /// The class number of each row, an index into `classes`.
    pub labels: Vec<i64>,
    /// Class names.
    pub classes: Vec<String>,
    /// One key (image path) per row.
    pub keys: Vec<String>,
    /// The extractor contract, when known.
    pub extractor: Option<ExtractorContract>,
}

/// How a data set is split into training and test items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SplitSpec {
    /// Per class, the first `round(train_fraction * n_class)` items by key (shuffled first when
    /// `seed` is given) train, the rest test: [`split_per_class`].
    PerClass {
        /// Fraction of each class that trains (0.6 in the papers).
        train_fraction: f64,
        /// Shuffle each class's items with this seed before taking the first ones.
        seed: Option<u64>,
    },
    /// Explicit lists of keys, one per line: [`split_from_lists`].
    Lists {
        /// The training keys.
        train: PathBuf,
        /// The test keys.
        test: PathBuf,
    },
}

impl Default for SplitSpec {
    fn default() -> SplitSpec {
        SplitSpec::PerClass {
            train_fraction: 0.6,
            seed: None,
        }
    }
}

/// `extractor.json`.
#[derive(Serialize, Deserialize)]
struct ExtractorFile {
    model: String,
    fingerprint: String,
    input: String,
    layout: String,
    size: u32,
    pixel_range: String,
    output: String,
    dim: u32,
}

impl Dataset {
    /// Loads `dir`: a DATA folder, or an index directory (items with kept features and labels).
    pub fn load(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Open(OpenError::MissingDirectory {
                path: dir.to_path_buf(),
            }));
        }
        let dataset = if dir.join(DATABASE_FILE).exists() {
            Dataset::from_index(&Index::open_read_only(dir)?, dir)?
        } else {
            Dataset::from_folder(dir)?
        };
        if dataset.labels.is_empty() {
            return Err(Error::Train(TrainError::EmptyData {
                what: format!("{} (no items)", dir.display()),
            }));
        }
        Ok(dataset)
    }

    fn from_folder(dir: &Path) -> Result<Dataset> {
        let bad = |file: &str, detail: String| {
            Error::Train(TrainError::BadData {
                path: dir.join(file),
                detail,
            })
        };
        let features_path = dir.join(FEATURES_FILE);
        if !features_path.exists() {
            return Err(bad(
                FEATURES_FILE,
                "missing: DATA is a folder written by Dataset::save (features.npy, labels.npy, classes.txt, paths.txt) or an index whose items were added with IngestOptions::keep_features".into(),
            ));
        }
        let features: Array2<f32> = ndarray_npy::read_npy(&features_path)
            .map_err(|err| bad(FEATURES_FILE, format!("not a float32 [n, d] array: {err}")))?;
        let labels: Array1<i64> = ndarray_npy::read_npy(dir.join(LABELS_FILE))
            .map_err(|err| bad(LABELS_FILE, format!("not an int64 [n] array: {err}")))?;
        let labels = labels.to_vec();
        if features.nrows() != labels.len() {
            return Err(bad(
                LABELS_FILE,
                format!(
                    "{} labels for {} feature rows; give exactly one label per row",
                    labels.len(),
                    features.nrows()
                ),
            ));
        }
        let lines = |file: &str| -> Result<Vec<String>> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            Ok(text
                .lines()
                .map(|line| unescape_line(line).into_owned())
                .collect())
        };
        let classes = lines(CLASSES_FILE)?;
        if let Some(&label) = labels
            .iter()
            .find(|&&l| l < 0 || l as usize >= classes.len())
        {
            return Err(bad(
                LABELS_FILE,
                format!(
                    "label {label} names no class: {CLASSES_FILE} lists {} (labels 0 to {})",
                    classes.len(),
                    classes.len() as i64 - 1
                ),
            ));
        }
        let keys = lines(PATHS_FILE)?;
        if keys.len() != labels.len() {
            return Err(bad(
                PATHS_FILE,
                format!("{} lines for {} items", keys.len(), labels.len()),
            ));
        }
        if let Some((row, column)) = crate::eval::first_non_finite(features.view()) {
            return Err(bad(
                FEATURES_FILE,
                format!(
                    "row {row} ({}), column {column} is NaN or infinite; features must be finite numbers",
                    keys[row]
                ),
            ));
        }
        let extractor = match std::fs::read_to_string(dir.join(EXTRACTOR_FILE)) {
            Ok(text) => Some(parse_extractor(&text).map_err(|d| bad(EXTRACTOR_FILE, d))?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::Io {
                    path: dir.join(EXTRACTOR_FILE),
                    source,
                })
            }
        };
        if let Some(model) = &extractor {
            if model.dim as usize != features.ncols() {
                return Err(bad(
                    EXTRACTOR_FILE,
                    format!(
                        "says {} values per feature vector but {FEATURES_FILE} has {}",
                        model.dim,
                        features.ncols()
                    ),
                ));
            }
        }
        Ok(Dataset {
            features,
            labels,
            classes,
            keys,
            extractor,
        })
    }

    fn from_index(index: &Index, dir: &Path) -> Result<Dataset> {
        let bad = |detail: String| {
            Error::Train(TrainError::BadData {
                path: dir.to_path_buf(),
                detail,
            })
        };
        let Some(model) = index.model() else {
            return Err(bad(
                "this index stores codes only; it has no features to train on".into(),
            ));
        };
        let reader = index.reader()?;
        let dim = model.dim as usize;
        let mut rows = Vec::new();
        let mut names = Vec::new();
        let mut keys = Vec::new();
        let (mut without_features, mut without_label) = (0usize, 0usize);
        for id in reader.ids().collect::<Vec<_>>() {
            let item = reader.item(id)?.unwrap_or_default();
            let Some(vector) = reader.features(id, model.dim)? else {
                without_features += 1;
                continue;
            };
            let Some(label) = item.label else {
                without_label += 1;
                continue;
            };
            rows.extend_from_slice(&vector);
            names.push(label);
            keys.push(item.key.unwrap_or_else(|| format!("id {id}")));
        }
        if without_features > 0 || without_label > 0 {
            return Err(bad(format!(
                "{without_features} items have no kept features and {without_label} no label; add images with IngestOptions::keep_features and IngestOptions::label_from_dir set to train on an index"
            )));
        }
        let classes: Vec<String> = names
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let labels = names
            .iter()
            .map(|name| classes.binary_search(name).expect("listed") as i64)
            .collect::<Vec<_>>();
        let features = Array2::from_shape_vec((labels.len(), dim), rows)
            .expect("one row of `dim` values per item");
        Ok(Dataset {
            features,
            labels,
            classes,
            keys,
            extractor: Some(model.clone()),
        })
    }

    /// Writes the DATA folder `dir` (created when missing). Each file is written whole or not at
    /// all (to a partial file beside it, then renamed), so that a failure leaves the file it
    /// would have replaced as it was.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        use ndarray_npy::WriteNpyExt;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        write_atomically_with(&dir.join(FEATURES_FILE), |out| {
            self.features.write_npy(out).map_err(std::io::Error::other)
        })?;
        write_atomically_with(&dir.join(LABELS_FILE), |out| {
            Array1::from(self.labels.clone())
                .write_npy(out)
                .map_err(std::io::Error::other)
        })?;
        let listing = |lines: &[String]| {
            lines
                .iter()
                .map(|line| format!("{}\n", escape_line(line)))
                .collect::<String>()
        };
        write_atomically(&dir.join(CLASSES_FILE), listing(&self.classes).as_bytes())?;
        write_atomically(&dir.join(PATHS_FILE), listing(&self.keys).as_bytes())?;
        if let Some(model) = &self.extractor {
            let file = ExtractorFile {
                model: model.path.clone(),
                fingerprint: crate::index::hex(&model.fingerprint),
                input: model.input.clone(),
                layout: model.layout.to_string(),
                size: model.size,
                pixel_range: model.pixel_range.to_string(),
                output: model.output.clone(),
                dim: model.dim,
            };
            let text = serde_json::to_string_pretty(&file).expect("serialises") + "\n";
            write_atomically(&dir.join(EXTRACTOR_FILE), text.as_bytes())?;
        } else if dir.join(EXTRACTOR_FILE).exists() {
            // An older contract left there would bind heads trained on this data to it.
            std::fs::remove_file(dir.join(EXTRACTOR_FILE)).map_err(|source| Error::Io {
                path: dir.join(EXTRACTOR_FILE),
                source,
            })?;
        }
        Ok(())
    }

    /// The training and test rows under `spec`.
    pub fn split(&self, spec: &SplitSpec) -> Result<Split> {
        match spec {
            SplitSpec::PerClass {
                train_fraction,
                seed,
            } => split_per_class(&self.labels, &self.keys, *train_fraction, *seed),
            SplitSpec::Lists { train, test } => {
                let read = |path: &PathBuf| -> Result<Vec<String>> {
                    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                    Ok(text
                        .lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty())
                        .map(|line| unescape_line(line).into_owned())
                        .collect())
                };
                split_from_lists(&self.keys, &read(train)?, &read(test)?).map_err(|err| {
                    Error::Train(TrainError::BadData {
                        path: train.clone(),
                        detail: format!(
                            "with test list {}: {err}; list keys exactly as DATA/paths.txt writes them (one per line, `\\`, line feeds and carriage returns escaped as `\\\\`, `\\n`, `\\r`)",
                            test.display()
                        ),
                    })
                })
            }
        }
    }

    /// The extractor binding a head trained on this data records.
    pub fn binding(&self) -> Option<ExtractorBinding> {
        self.extractor.as_ref().map(|model| ExtractorBinding {
            fingerprint: model.fingerprint,
            output: model.output.clone(),
        })
    }

    /// The name of class `label`.
    pub fn class_name(&self, label: i64) -> &str {
        usize::try_from(label)
            .ok()
            .and_then(|i| self.classes.get(i))
            .map_or("?", String::as_str)
    }
}

fn parse_extractor(text: &str) -> std::result::Result<ExtractorContract, String> {
    let file: ExtractorFile = serde_json::from_str(text).map_err(|err| err.to_string())?;
    let fingerprint = parse_hex32(&file.fingerprint)
        .ok_or_else(|| format!("fingerprint {:?} is not 64 hex digits", file.fingerprint))?;
    Ok(ExtractorContract {
        fingerprint,
        path: file.model,
        input: file.input,
        layout: file
            .layout
            .parse()
            .map_err(|err: UnknownName| err.to_string())?,
        size: file.size,
        pixel_range: file
            .pixel_range
            .parse()
            .map_err(|err: UnknownName| err.to_string())?,
        output: file.output,
        dim: file.dim,
    })
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
