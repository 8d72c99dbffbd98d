//! Token embedder (`embedder: {type: token, vocab_size, d_model}`), or none.
//! Shapes: ids (b, t) u32 -> (b, t, d_model).

use candle_core::{Result, Tensor};
use candle_nn::{Embedding, Init, Module, VarBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum EmbedderSpec {
    /// A learned table of `vocab_size` rows of width `d_model`.
    #[serde(rename = "token")]
    Token { vocab_size: usize, d_model: usize },
    /// The topology consumes features directly (no token input).
    #[serde(rename = "none")]
    None,
}

pub struct Embedder {
    table: Embedding,
}

impl Embedder {
    /// Weight at `<path>.weight` (HF: `model.embed_tokens.weight`), N(0, 0.02) when fresh.
    pub fn build(vocab_size: usize, d_model: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get_with_hints(
            (vocab_size, d_model),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        Ok(Self {
            table: Embedding::new(w, d_model),
        })
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.table.forward(ids)
    }

    /// The (vocab, d_model) table, for a tied output head.
    pub fn weight(&self) -> &Tensor {
        self.table.embeddings()
    }
}
