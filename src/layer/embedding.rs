//! Token embedder (`embedder: {type: token, vocab_size, d_model}`), or none.
//! Shapes: ids (b, t) u32 -> (b, t, d_model).
//!
//! The table is dense (trainable) or, when the weight source offers it as GGML blocks (a GGUF
//! file), kept quantized: rows are dequantized on lookup and a tied output head multiplies by
//! the quantized table directly.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Result, Tensor};
use candle_nn::{Embedding, Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::linear::quantized_weight;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum EmbedderSpec {
    /// A learned table of `vocab_size` rows of width `d_model`.
    #[serde(rename = "token")]
    Token { vocab_size: usize, d_model: usize },
    /// The topology consumes features directly (no token input).
    #[serde(rename = "none")]
    #[default]
    None,
}

enum Table {
    Dense(Embedding),
    Quantized { table: Arc<QTensor>, head: QMatMul },
}

pub struct Embedder {
    table: Table,
    d_model: usize,
}

impl Embedder {
    /// Weight at `<path>.weight` (HF: `model.embed_tokens.weight`), N(0, 0.02) when fresh.
    pub fn build(vocab_size: usize, d_model: usize, vb: VarBuilder) -> Result<Self> {
        let table = match quantized_weight(&vb, "weight", (vocab_size, d_model))? {
            Some(q) => Table::Quantized {
                head: QMatMul::from_arc(q.clone())?,
                table: q,
            },
            None => {
                let w = vb.get_with_hints(
                    (vocab_size, d_model),
                    "weight",
                    Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                )?;
                Table::Dense(Embedding::new(w, d_model))
            }
        };
        Ok(Self { table, d_model })
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.table {
            // why: its backward is one deterministic kernel on CUDA instead of candle's zero fill
            // and `index_add` (the same function: `ops::embedding`).
            Table::Dense(e) => crate::ops::embedding::lookup(e.embeddings(), ids),
            Table::Quantized { table, .. } => table.embedding(ids),
        }
    }

    /// Width of an embedding row.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// The (vocab, d_model) table, for a tied output head (dequantized when stored quantized).
    pub fn weight(&self) -> Result<Tensor> {
        match &self.table {
            Table::Dense(e) => Ok(e.embeddings().clone()),
            Table::Quantized { table, .. } => table.dequantize(&table.device()),
        }
    }

    /// Tied output head: features (b, t, d_model) · tableᵀ -> logits (b, t, vocab). A quantized
    /// table multiplies the f32 features as they are (a greedy choice can hinge on a few
    /// hundredths of a logit).
    pub fn tied_logits(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        match &self.table {
            Table::Dense(e) => {
                let vocab = e.embeddings().dim(0)?;
                xs.reshape((b * t, d))?
                    .matmul(&e.embeddings().t()?)?
                    .reshape((b, t, vocab))
            }
            Table::Quantized { head, .. } => super::linear::quantized_matmul(head, xs, true),
        }
    }
}
