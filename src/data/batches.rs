//! A token dataset split into train/val (val = the tail), and seeded random `(x, y)` blocks.
//!
//! A block starts at a uniform position `i` of its split: `x = tok[i..i+T]`, `y = tok[i+1..i+T+1]`.
//! Positions come from a ChaCha8 stream whose state is `(seed, word position)`, so a run can save
//! it in a checkpoint and resume drawing exactly the batches it would have drawn.
//! Shapes: x, y (b, t) u32.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::npy::TokenFile;

/// Which part of the token file to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
        }
    }
}

/// A validated token file with its train/val ranges.
#[derive(Debug, Clone)]
pub struct TokenDataset {
    file: Arc<TokenFile>,
    block_size: usize,
    vocab: usize,
    train: Range<usize>,
    val: Range<usize>,
}

impl TokenDataset {
    /// Open `path`, check every id is below `vocab`, and hold back the last `val_frac` of the
    /// tokens for validation (`0` disables it). Each non-empty split must fit one block + 1.
    pub fn open(
        path: impl AsRef<Path>,
        block_size: usize,
        val_frac: f64,
        vocab: usize,
    ) -> Result<Self, DataError> {
        if !(0.0..1.0).contains(&val_frac) {
            return Err(DataError::BadValFrac { val_frac });
        }
        let file = TokenFile::open(path)?;
        file.validate(vocab)?;
        let n = file.len();
        let n_val = (n as f64 * val_frac).round() as usize;
        let ds = Self {
            block_size,
            vocab,
            train: 0..n - n_val,
            val: n - n_val..n,
            file: Arc::new(file),
        };
        ds.check(Split::Train)?;
        if val_frac > 0.0 {
            ds.check(Split::Val)?;
        }
        Ok(ds)
    }

    fn check(&self, split: Split) -> Result<(), DataError> {
        let range = self.range(split);
        if range.len() < self.block_size + 1 || self.block_size == 0 {
            return Err(DataError::TooShort {
                path: self.file.path().to_path_buf(),
                split: split.name(),
                tokens: range.len(),
                block_size: self.block_size,
            });
        }
        Ok(())
    }

    fn range(&self, split: Split) -> Range<usize> {
        match split {
            Split::Train => self.train.clone(),
            Split::Val => self.val.clone(),
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The vocabulary the ids were validated against.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Tokens in a split.
    pub fn len(&self, split: Split) -> usize {
        self.range(split).len()
    }

    /// Whether the dataset has a validation split.
    pub fn has_val(&self) -> bool {
        self.val.len() > self.block_size
    }

    /// `b` random blocks of the split: (x, y), each (b, block_size) u32 on `device`.
    pub fn batch(
        &self,
        split: Split,
        b: usize,
        sampler: &mut BatchSampler,
        device: &Device,
    ) -> Result<(Tensor, Tensor), DataError> {
        self.check(split)?;
        let t = self.block_size;
        let range = self.range(split);
        let max_start = range.end - t - 1;
        let mut xs = Vec::with_capacity(b * t);
        let mut ys = Vec::with_capacity(b * t);
        for _ in 0..b {
            let i = sampler.rng.random_range(range.start..=max_start);
            let block = self.file.get(i..i + t + 1)?;
            xs.extend_from_slice(&block[..t]);
            ys.extend_from_slice(&block[1..]);
        }
        let tensor = |v: Vec<u32>| {
            Tensor::from_vec(v, (b, t), device).map_err(|e| DataError::BadNpy {
                path: self.path().to_path_buf(),
                reason: format!("cannot build a batch tensor: {e}"),
            })
        };
        Ok((tensor(xs)?, tensor(ys)?))
    }
}

/// The seeded position stream of a dataset; its [`SamplerState`] restores it exactly.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    seed: u64,
    rng: ChaCha8Rng,
}

/// What a checkpoint stores to resume the batch stream: seed and ChaCha8 word position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    pub seed: u64,
    pub word_pos: u128,
}

impl BatchSampler {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn state(&self) -> SamplerState {
        SamplerState {
            seed: self.seed,
            word_pos: self.rng.get_word_pos(),
        }
    }

    pub fn restore(state: SamplerState) -> Self {
        let mut s = Self::new(state.seed);
        s.rng.set_word_pos(state.word_pos);
        s
    }
}
