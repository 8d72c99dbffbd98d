//! A model under benchmark: the built network with the name it is reported under, what the
//! benchmarks need to know about it (spec, tokenizer, context, device, dtype, weight bytes).

use candle_core::{DType, Device};

use super::BenchError;
use crate::loader::{LoadedModel, TextTokenizer};
use crate::model::{LanguageModel, ModelSpec};

/// One model as the benchmarks see it; borrowed, so one loaded model serves every benchmark.
pub struct BenchModel<'a> {
    /// Name in the results (`"teacher"`, `"student"`, a run id, a path).
    pub name: String,
    pub model: &'a LanguageModel,
    /// The topology (exact KV bytes per token are computed from it).
    pub spec: &'a ModelSpec,
    /// Needed by accuracy, generation and behavior; `None` for byte-level manifest models.
    pub tokenizer: Option<&'a TextTokenizer>,
    /// Longest context the model supports.
    pub max_seq_len: usize,
    /// Bytes of the parameters as held in memory.
    pub model_bytes: u64,
    pub device: Device,
    pub dtype: DType,
}

impl<'a> BenchModel<'a> {
    /// A loaded model (any source) under `name`.
    pub fn from_loaded(name: impl Into<String>, loaded: &'a LoadedModel) -> Self {
        Self {
            name: name.into(),
            model: &loaded.model,
            spec: &loaded.spec,
            tokenizer: loaded.tokenizer.as_ref(),
            max_seq_len: loaded.max_seq_len,
            model_bytes: loaded.weight_bytes as u64,
            device: loaded.device.clone(),
            dtype: loaded.dtype,
        }
    }

    /// The model's vocabulary size (random prompts are drawn below it).
    pub fn vocab(&self) -> usize {
        self.model.vocab_size().unwrap_or(2).max(2)
    }

    /// The tokenizer, or an error naming the benchmark that needs it.
    pub fn tokenizer(&self, what: &str) -> Result<&'a TextTokenizer, BenchError> {
        self.tokenizer.ok_or_else(|| BenchError::Model {
            model: self.name.clone(),
            message: format!("the {what} benchmark needs a tokenizer, and this model has none"),
        })
    }

    /// Fails unless `needed` positions fit the model's context.
    pub fn check_context(&self, needed: usize, what: &str) -> Result<(), BenchError> {
        if needed > self.max_seq_len {
            return Err(BenchError::Model {
                model: self.name.clone(),
                message: format!(
                    "{what} needs {needed} positions; the model supports {}",
                    self.max_seq_len
                ),
            });
        }
        Ok(())
    }
}
