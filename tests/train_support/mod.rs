//! Shared helpers of the training tests: a tiny Llama-style model spec and a real-English corpus.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use caramba::data::{PrepareSpec, TokenDataset, Tokenizer, prepare};
use caramba::layer::{AttentionMode, AttentionSpec, EmbedderSpec, RmsNormSpec, SwiGluSpec};
use caramba::model::ModelSpec;
use caramba::topology::{NodeSpec, TopologySpec};
use caramba::train::TrainSpec;

/// Pre-norm transformer: `n_layers` × [x + attn(norm(x)), x + swiglu(norm(x))], final norm, tied head.
pub fn tiny_model(
    vocab: usize,
    d_model: usize,
    n_layers: usize,
    n_heads: usize,
    dropout_p: f64,
) -> ModelSpec {
    let norm = || {
        NodeSpec::RmsNorm(RmsNormSpec {
            d_model,
            eps: 1e-5,
            elementwise_affine: true,
        })
    };
    let attn = NodeSpec::Attention(AttentionSpec {
        d_model,
        n_heads,
        n_kv_heads: None,
        mode: AttentionMode::Standard,
        attn_dim: None,
        head_dim: None,
        rope_enabled: true,
        rope_base: 10000.0,
        rope_scaling: None,
        is_causal: true,
        dropout_p,
        bias: false,
        ..AttentionSpec::new(d_model, n_heads)
    });
    let mlp = NodeSpec::SwiGlu(SwiGluSpec {
        d_model,
        d_ff: d_model * 8 / 3,
        bias: false,
    });
    let block = vec![
        NodeSpec::Residual(TopologySpec {
            layers: vec![norm(), attn],
            repeat: 1,
        }),
        NodeSpec::Residual(TopologySpec {
            layers: vec![norm(), mlp],
            repeat: 1,
        }),
    ];
    let topology = NodeSpec::Stacked(TopologySpec {
        layers: vec![
            NodeSpec::Stacked(TopologySpec {
                layers: block,
                repeat: n_layers,
            }),
            norm(),
        ],
        repeat: 1,
    });
    ModelSpec {
        kind: Default::default(),
        embedder: EmbedderSpec::Token {
            vocab_size: vocab,
            d_model,
        },
        topology,
        tied_embeddings: true,
    }
}

/// Small, fast training settings for tests.
pub fn tiny_train_spec() -> TrainSpec {
    TrainSpec {
        batch_size: 8,
        lr: 3e-3,
        warmup_steps: 5,
        eval_every: 0,
        log_every: 1,
        weight_decay: 0.01,
        ..TrainSpec::default()
    }
}

/// The license texts every Debian ships (`/usr/share/common-licenses`): real English.
pub const LICENSES: &str = "/usr/share/common-licenses/*";

/// Tokenize the license texts with the bytes tokenizer into `<dir>/corpus.npy` (through `prepare`).
pub fn english_corpus(dir: &Path) -> PathBuf {
    let out = dir.join("corpus.npy");
    let spec = PrepareSpec {
        input: vec![LICENSES.into()],
        debian_package: None,
        tokenizer: None,
        separate_documents: true,
    };
    let summary = prepare(&spec, &Tokenizer::Bytes, &out).expect("prepare the license texts");
    assert!(
        summary.tokens > 100_000,
        "expected a few hundred KB of text, got {summary}"
    );
    out
}

pub fn english_dataset(dir: &Path, block_size: usize, val_frac: f64) -> TokenDataset {
    let path = english_corpus(dir);
    TokenDataset::open(path, block_size, val_frac, 256).expect("open corpus")
}
