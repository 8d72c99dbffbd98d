//! Supervised arrays (`data: {type: npy_supervised, …}`): a float feature matrix and integer class
//! labels in two `.npy` files, checked row by row, split into train / val / test per class.
//!
//! Shapes: features (n, n_features) float32 or float64, labels (n,) any integer type; a row of an
//! image dataset is the image in row-major (h, w, c) order. The split is stratified: each class's
//! rows are shuffled with a ChaCha8 stream seeded by `split_seed`, the first `test_frac` of them
//! go to test, the next `val_frac` to val, the rest to train, so every class is in every split in
//! proportion and the split does not depend on the run seed. Batches: xs (b, n_features) f32,
//! ys (b,) u32.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::DataError;

/// `data:` of a classifier target.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisedSpec {
    /// `.npy` of features, one row per example: (n, n_features), float32 or float64.
    pub features: String,
    /// `.npy` of class labels: (n,), integers in `0..n_classes`.
    pub labels: String,
    /// Number of classes (the classifier's output width).
    pub n_classes: usize,
    /// Features per row. Default: height · width · channels of `image` (required without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_features: Option<usize>,
    /// The rows are images of this shape (for patch embedders and the pictures). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageShape>,
    /// Every feature is multiplied by this on load (digits: 1/16 maps 0..16 to 0..1). Default: 1.
    #[serde(default = "one")]
    pub feature_scale: f64,
    /// Fraction of each class held out for the final test. Default: 0.2.
    #[serde(default = "default_test_frac")]
    pub test_frac: f64,
    /// Fraction of each class for the validation curves during training. Default: 0.1.
    #[serde(default = "default_val_frac")]
    pub val_frac: f64,
    /// Seed of the split (not the run seed: every run of a target sees the same split). Default: 0.
    #[serde(default)]
    pub split_seed: u64,
    /// Where the two files come from when they do not exist yet. Default: none (they must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<SupervisedSource>,
}

fn one() -> f64 {
    1.0
}
fn default_test_frac() -> f64 {
    0.2
}
fn default_val_frac() -> f64 {
    0.1
}

/// `image: {height: 8, width: 8, channels: 1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageShape {
    pub height: usize,
    pub width: usize,
    /// Default: 1.
    #[serde(default = "one_usize")]
    pub channels: usize,
}

fn one_usize() -> usize {
    1
}

impl ImageShape {
    /// height · width · channels (saturating).
    pub fn pixels(&self) -> usize {
        self.height
            .saturating_mul(self.width)
            .saturating_mul(self.channels)
    }
}

/// A known public dataset that `prepare` can fetch into `features` / `labels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisedSource {
    pub source: SourceKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// scikit-learn's bundled 8×8 handwritten digits (1,797 rows, 10 classes), taken out of the
    /// scikit-learn wheel on PyPI (see [`super::digits`]).
    SklearnDigits,
}

impl SupervisedSpec {
    /// Features per row: `n_features`, else the image's pixel count.
    pub fn width(&self) -> Option<usize> {
        self.n_features.or(self.image.map(|i| i.pixels()))
    }
}

/// Row indices of the three splits, each ascending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// Which rows to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
    Test,
}

/// A loaded, checked, split supervised dataset (small enough to live in memory).
#[derive(Debug, Clone)]
pub struct SupervisedDataset {
    /// Row-major (n, n_features), already scaled.
    features: Vec<f32>,
    labels: Vec<u32>,
    n_features: usize,
    n_classes: usize,
    image: Option<ImageShape>,
    split: SplitIndices,
}

impl SupervisedDataset {
    /// Read both files, check shapes, every label and every feature, and split.
    pub fn open(spec: &SupervisedSpec) -> Result<Self, DataError> {
        let fpath = PathBuf::from(&spec.features);
        let lpath = PathBuf::from(&spec.labels);
        for p in [&fpath, &lpath] {
            if !p.exists() {
                return Err(DataError::Missing { path: p.clone() });
            }
        }
        let feats = read_npy(&fpath)?;
        let (n, f) = feats.dims2().map_err(|_| DataError::BadShape {
            path: fpath.clone(),
            reason: format!("expected 2 dimensions (rows, features), found {:?}", feats.dims()),
        })?;
        if let Some(want) = spec.width()
            && want != f
        {
            let from = match (spec.n_features, spec.image) {
                (Some(_), _) => "n_features".to_string(),
                (None, Some(i)) => format!("image {}×{}×{}", i.height, i.width, i.channels),
                (None, None) => "the data block".to_string(),
            };
            return Err(DataError::BadShape {
                path: fpath,
                reason: format!("rows have {f} features, but {from} says {want}"),
            });
        }
        let labels_t = read_npy(&lpath)?;
        if labels_t.rank() != 1 || labels_t.dim(0).ok() != Some(n) {
            return Err(DataError::BadShape {
                path: lpath,
                reason: format!(
                    "expected ({n},), one label per row of {}, found {:?}",
                    fpath.display(),
                    labels_t.dims()
                ),
            });
        }
        if labels_t.dtype().is_float() {
            return Err(DataError::BadShape {
                path: lpath,
                reason: format!("labels must be integers, found {:?}", labels_t.dtype()),
            });
        }
        let tensor_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: candle_core::Error| DataError::BadNpy {
                path: path.clone(),
                reason: e.to_string(),
            }
        };
        let raw_labels: Vec<i64> = labels_t
            .to_dtype(DType::I64)
            .and_then(|t| t.to_vec1())
            .map_err(tensor_err(&lpath))?;
        let mut labels = Vec::with_capacity(n);
        for (row, &value) in raw_labels.iter().enumerate() {
            if value < 0 || value as u64 >= spec.n_classes as u64 {
                return Err(DataError::LabelOutOfRange {
                    path: lpath,
                    row,
                    value,
                    n_classes: spec.n_classes,
                });
            }
            labels.push(value as u32);
        }
        let raw: Vec<f32> = feats
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(tensor_err(&fpath))?;
        let scale = spec.feature_scale as f32;
        let mut features = Vec::with_capacity(raw.len());
        for (i, &value) in raw.iter().enumerate() {
            if !value.is_finite() {
                return Err(DataError::NonFiniteFeature {
                    path: fpath,
                    row: i / f.max(1),
                    column: i % f.max(1),
                    value,
                });
            }
            features.push(value * scale);
        }
        let split = stratified_split(
            &labels,
            spec.n_classes,
            spec.test_frac,
            spec.val_frac,
            spec.split_seed,
        );
        for (name, part) in [("train", &split.train), ("test", &split.test)] {
            if part.is_empty() {
                return Err(DataError::EmptySplit {
                    split: name,
                    rows: n,
                    test_frac: spec.test_frac,
                    val_frac: spec.val_frac,
                });
            }
        }
        Ok(Self {
            features,
            labels,
            n_features: f,
            n_classes: spec.n_classes,
            image: spec.image,
            split,
        })
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    pub fn image(&self) -> Option<ImageShape> {
        self.image
    }

    pub fn split(&self) -> &SplitIndices {
        &self.split
    }

    /// Row indices of `part`.
    pub fn rows(&self, part: Part) -> &[usize] {
        match part {
            Part::Train => &self.split.train,
            Part::Val => &self.split.val,
            Part::Test => &self.split.test,
        }
    }

    /// The (scaled) features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.n_features..(i + 1) * self.n_features]
    }

    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// Rows `rows` as xs (b, n_features) f32 and ys (b,) u32 on `device`.
    pub fn batch(&self, rows: &[usize], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let mut xs = Vec::with_capacity(rows.len() * self.n_features);
        let mut ys = Vec::with_capacity(rows.len());
        for &i in rows {
            xs.extend_from_slice(self.row(i));
            ys.push(self.labels[i]);
        }
        Ok((
            Tensor::from_vec(xs, (rows.len(), self.n_features), device)?,
            Tensor::from_vec(ys, rows.len(), device)?,
        ))
    }
}

fn read_npy(path: &Path) -> Result<Tensor, DataError> {
    Tensor::read_npy(path).map_err(|e| DataError::BadNpy {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Per class: shuffle its rows (ChaCha8 from `seed`), first `test_frac` → test, next `val_frac`
/// → val, the rest → train; each split sorted.
pub fn stratified_split(
    labels: &[u32],
    n_classes: usize,
    test_frac: f64,
    val_frac: f64,
    seed: u64,
) -> SplitIndices {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &y) in labels.iter().enumerate() {
        if let Some(rows) = by_class.get_mut(y as usize) {
            rows.push(i);
        }
    }
    let mut out = SplitIndices {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for rows in &mut by_class {
        rows.shuffle(&mut rng);
        let n = rows.len();
        let n_test = ((n as f64 * test_frac).round() as usize).min(n);
        let n_val = ((n as f64 * val_frac).round() as usize).min(n - n_test);
        out.test.extend_from_slice(&rows[..n_test]);
        out.val.extend_from_slice(&rows[n_test..n_test + n_val]);
        out.train.extend_from_slice(&rows[n_test + n_val..]);
    }
    out.train.sort_unstable();
    out.val.sort_unstable();
    out.test.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, t: &Tensor) -> String {
        let p = dir.join(name);
        t.write_npy(&p).expect("write npy");
        p.display().to_string()
    }

    fn spec(features: String, labels: String) -> SupervisedSpec {
        SupervisedSpec {
            features,
            labels,
            n_classes: 3,
            n_features: Some(2),
            image: None,
            feature_scale: 1.0,
            test_frac: 0.25,
            val_frac: 0.25,
            split_seed: 0,
            prepare: None,
        }
    }

    #[test]
    fn split_is_stratified_disjoint_and_covers_every_row() {
        let labels: Vec<u32> = (0..100).map(|i| i % 4).collect();
        let s = stratified_split(&labels, 4, 0.2, 0.1, 7);
        // 25 rows a class: 5 test, round(2.5) = 3 val, 17 train.
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (68, 12, 20));
        let mut all: Vec<usize> = s.train.iter().chain(&s.val).chain(&s.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        for c in 0..4 {
            assert_eq!(s.test.iter().filter(|&&i| labels[i] == c).count(), 5);
        }
        assert_eq!(s, stratified_split(&labels, 4, 0.2, 0.1, 7), "deterministic");
    }

    #[test]
    fn bad_labels_and_nan_features_name_the_file_and_row() {
        let dir = tempfile::tempdir().expect("tmp");
        let x = Tensor::new(&[[0f32, 1.], [2., 3.], [4., 5.], [6., 7.]], &Device::Cpu).expect("x");
        let f = write(dir.path(), "x.npy", &x);
        let bad = write(
            dir.path(),
            "y.npy",
            &Tensor::new(&[0i64, 1, 5, 2], &Device::Cpu).expect("y"),
        );
        let e = SupervisedDataset::open(&spec(f.clone(), bad)).expect_err("label 5 of 3 classes");
        let text = e.to_string();
        assert!(
            text.contains("y.npy") && text.contains("row 2") && text.contains("label 5"),
            "{text}"
        );

        let nan = Tensor::new(&[[0f32, 1.], [2., f32::NAN], [4., 5.], [6., 7.]], &Device::Cpu).expect("x");
        let fnan = write(dir.path(), "nan.npy", &nan);
        let y = write(
            dir.path(),
            "ok.npy",
            &Tensor::new(&[0i64, 1, 2, 0], &Device::Cpu).expect("y"),
        );
        let e = SupervisedDataset::open(&spec(fnan, y.clone())).expect_err("NaN");
        let text = e.to_string();
        assert!(
            text.contains("nan.npy") && text.contains("row 1, feature 1"),
            "{text}"
        );

        let mut wide = spec(f, y);
        wide.n_features = Some(3);
        let text = SupervisedDataset::open(&wide).expect_err("width").to_string();
        assert!(
            text.contains("x.npy") && text.contains("2 features") && text.contains("n_features says 3"),
            "{text}"
        );
    }
}
