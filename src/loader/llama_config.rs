//! Llama configuration: the serde mirror of HF's `config.json` (`LlamaForCausalLM`), the resolved
//! [`LlamaConfig`] (also read from GGUF metadata), and the caramba [`ModelSpec`] it describes.
//!
//! The topology is the one a manifest would write, lowered:
//! `Stacked[ Nested[ Residual[RMSNorm, Attention(gqa)], Residual[RMSNorm, SwiGLU] ] × n_layers,
//! RMSNorm, (Linear head unless tied) ]`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::LoadError;
use crate::layer::{
    AttentionMode, AttentionSpec, EmbedderSpec, LayerSpec, LinearSpec, RmsNormSpec, SwiGluSpec,
};
use crate::manifest::validate::{MAX_DIM, MAX_REPEAT};
use crate::model::{ModelKind, ModelSpec};
use crate::ops::RopeScaling;
use crate::topology::{NodeSpec, TopologySpec};

/// One id or a list of ids (HF writes `eos_token_id` both ways).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdList {
    One(u32),
    Many(Vec<u32>),
}

impl IdList {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(i) => vec![*i],
            Self::Many(v) => v.clone(),
        }
    }
}

/// HF `config.json` of a `LlamaForCausalLM` (fields caramba reads; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct HfLlamaConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Default: `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Default: `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Default: 1e-6 (HF's LlamaConfig).
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Default: 10000.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// HF ≤ 4.x: `{rope_type: llama3, factor, …}`.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// HF ≥ 5: `{rope_type, rope_theta, factor, …}` (replaces `rope_scaling` and `rope_theta`).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Default: false.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub vocab_size: usize,
    /// Default: 2048.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub bos_token_id: Option<IdList>,
    #[serde(default)]
    pub eos_token_id: Option<IdList>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// Default: silu (the only one supported).
    #[serde(default)]
    pub hidden_act: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}

/// A resolved Llama configuration, whatever file it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaConfig {
    pub d_model: usize,
    pub d_ff: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tied_embeddings: bool,
    pub vocab_size: usize,
    /// Longest context the model was trained for (`max_position_embeddings`).
    pub max_seq_len: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

impl LlamaConfig {
    /// Read and resolve an HF `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| LoadError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        let arch = raw
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str());
        let model_type = raw.get("model_type").and_then(|a| a.as_str());
        match (arch, model_type) {
            (Some("LlamaForCausalLM"), _) | (None, Some("llama")) => {}
            (Some(other), _) => {
                return Err(LoadError::UnsupportedArchitecture {
                    path: path.into(),
                    found: other.into(),
                });
            }
            (None, other) => {
                return Err(LoadError::UnsupportedArchitecture {
                    path: path.into(),
                    found: other.unwrap_or("(no `architectures` nor `model_type`)").into(),
                });
            }
        }
        let hf: HfLlamaConfig = serde_path_to_error::deserialize(raw).map_err(|e| LoadError::Config {
            path: path.into(),
            message: format!("{}: {}", e.path(), e.inner()),
        })?;
        Self::from_hf(&hf, path)
    }

    /// Resolve a parsed HF config (`path` names the file in errors).
    pub fn from_hf(hf: &HfLlamaConfig, path: &Path) -> Result<Self, LoadError> {
        if let Some(act) = hf.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(LoadError::Config {
                path: path.into(),
                message: format!("hidden_act `{act}` is not supported (Llama uses silu)"),
            });
        }
        let scaling = hf.rope_parameters.as_ref().or(hf.rope_scaling.as_ref());
        let rope_scaling = match scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => parse_rope_scaling(v, path)?,
        };
        let rope_theta = hf
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
            .unwrap_or(hf.rope_theta);
        let n_heads = hf.num_attention_heads;
        let cfg = Self {
            d_model: hf.hidden_size,
            d_ff: hf.intermediate_size,
            n_layers: hf.num_hidden_layers,
            n_heads,
            n_kv_heads: hf.num_key_value_heads.unwrap_or(n_heads),
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / n_heads.max(1)),
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta,
            rope_scaling,
            tied_embeddings: hf.tie_word_embeddings,
            vocab_size: hf.vocab_size,
            max_seq_len: hf.max_position_embeddings,
            bos_token_id: hf.bos_token_id.as_ref().and_then(|b| b.to_vec().first().copied()),
            eos_token_ids: hf.eos_token_id.as_ref().map(IdList::to_vec).unwrap_or_default(),
            attention_bias: hf.attention_bias,
            mlp_bias: hf.mlp_bias,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Shape checks that would otherwise surface as a confusing build error.
    pub fn validate(&self, path: &Path) -> Result<(), LoadError> {
        let bad = |message: String| {
            Err(LoadError::Config {
                path: path.into(),
                message,
            })
        };
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.n_layers == 0 || self.d_model == 0 {
            return bad("heads, layers and hidden size must be at least 1".into());
        }
        // why: sizes past these bounds are corrupt metadata, not models; building them would
        // allocate until the process aborts (GGUF block_count 2^32-1, num_hidden_layers 1e9).
        for (name, v) in [
            ("hidden_size", self.d_model),
            ("intermediate_size", self.d_ff),
            ("num_attention_heads", self.n_heads),
            ("num_key_value_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_seq_len),
        ] {
            if v > MAX_DIM {
                return bad(format!("{name} {v} is larger than {MAX_DIM}"));
            }
        }
        if self.n_layers > MAX_REPEAT {
            return bad(format!(
                "num_hidden_layers {} is more than {MAX_REPEAT}",
                self.n_layers
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(format!(
                "rms_norm_eps must be a small positive number (got {})",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!(
                "rope_theta must be a positive number (got {})",
                self.rope_theta
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} is odd; RoPE rotates pairs", self.head_dim));
        }
        let spec = self.attention_spec();
        if let Some(p) = spec.problems().first() {
            return bad(format!("attention: {}: {}", p.field, p.message));
        }
        // why: the least a weight can take is half a byte (4-bit GGUF blocks); more weights than
        // this machine can hold cannot load, so say so instead of allocating until the abort.
        let params = crate::compiler::ModelStats::of(&self.model_spec()).params;
        if let Some(limit) = crate::compiler::memory::host_memory_bytes()
            && params / 2 > limit
        {
            return bad(format!(
                "{params} parameters need at least {} even at 4 bits each, more than this machine's {}",
                crate::compiler::memory::gib(params / 2),
                crate::compiler::memory::gib(limit)
            ));
        }
        Ok(())
    }

    fn attention_spec(&self) -> AttentionSpec {
        AttentionSpec {
            n_kv_heads: Some(self.n_kv_heads),
            mode: if self.n_kv_heads == self.n_heads {
                AttentionMode::Standard
            } else {
                AttentionMode::Gqa
            },
            attn_dim: Some(self.n_heads * self.head_dim),
            head_dim: Some(self.head_dim),
            rope_base: self.rope_theta,
            rope_scaling: self.rope_scaling.clone(),
            bias: self.attention_bias,
            ..AttentionSpec::new(self.d_model, self.n_heads)
        }
    }

    /// The caramba model this config describes (lowered: explicit children, every repeat 1).
    pub fn model_spec(&self) -> ModelSpec {
        let norm = || {
            NodeSpec::RmsNorm(RmsNormSpec {
                d_model: self.d_model,
                eps: self.rms_norm_eps,
                elementwise_affine: true,
            })
        };
        let topo = |layers: Vec<NodeSpec>| TopologySpec { layers, repeat: 1 };
        let block = || {
            NodeSpec::Nested(topo(vec![
                NodeSpec::Residual(topo(vec![norm(), NodeSpec::Attention(self.attention_spec())])),
                NodeSpec::Residual(topo(vec![
                    norm(),
                    NodeSpec::SwiGlu(SwiGluSpec {
                        d_model: self.d_model,
                        d_ff: self.d_ff,
                        bias: self.mlp_bias,
                    }),
                ])),
            ]))
        };
        let mut layers: Vec<NodeSpec> = (0..self.n_layers).map(|_| block()).collect();
        layers.push(norm());
        if !self.tied_embeddings {
            layers.push(NodeSpec::Linear(LinearSpec {
                d_in: self.d_model,
                d_out: self.vocab_size,
                bias: false,
            }));
        }
        ModelSpec {
            kind: ModelKind::TransformerModel,
            embedder: EmbedderSpec::Token {
                vocab_size: self.vocab_size,
                d_model: self.d_model,
            },
            topology: NodeSpec::Stacked(topo(layers)),
            tied_embeddings: self.tied_embeddings,
        }
    }
}

/// HF `rope_scaling` → [`RopeScaling`] (`default` means none); only `llama3` is supported (the original silently fell back
/// to plain RoPE for anything it did not know, which gives wrong logits).
fn parse_rope_scaling(v: &serde_json::Value, path: &Path) -> Result<Option<RopeScaling>, LoadError> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("(none)");
    if kind == "default" {
        return Ok(None);
    }
    if kind != "llama3" {
        return Err(LoadError::UnsupportedRope {
            path: path.into(),
            found: kind.into(),
        });
    }
    let num = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
    Ok(Some(RopeScaling {
        rope_type: "llama3".into(),
        factor: num("factor", 8.0),
        low_freq_factor: num("low_freq_factor", 1.0),
        high_freq_factor: num("high_freq_factor", 4.0),
        original_max_position_embeddings: num("original_max_position_embeddings", 8192.0) as usize,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<LlamaConfig, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json.to_string()).unwrap();
        LlamaConfig::from_hf_file(&path)
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
        })
    }

    #[test]
    fn transformers_4_rope_scaling_and_5_rope_parameters_agree() {
        let mut v4 = base();
        v4["rope_theta"] = 500000.0.into();
        v4["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 32.0, "original_max_position_embeddings": 8192});
        let mut v5 = base();
        v5["rope_parameters"] = serde_json::json!({
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "original_max_position_embeddings": 8192
        });
        let (a, b) = (parse(v4).unwrap(), parse(v5).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.rope_theta, 500000.0);
        assert_eq!(a.rope_scaling.as_ref().map(|s| s.factor), Some(32.0));
        assert_eq!(a.head_dim, 16);
        assert_eq!(a.n_kv_heads, 2);
    }

    #[test]
    fn unsupported_architecture_and_rope_type_are_named() {
        let mut v = base();
        v["architectures"] = serde_json::json!(["MistralForCausalLM"]);
        assert!(
            matches!(parse(v), Err(LoadError::UnsupportedArchitecture { found, .. }) if found == "MistralForCausalLM")
        );
        let mut v = base();
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        assert!(matches!(parse(v), Err(LoadError::UnsupportedRope { found, .. }) if found == "yarn"));
    }

    #[test]
    fn bad_head_counts_are_config_errors() {
        let mut v = base();
        v["num_key_value_heads"] = 3.into();
        assert!(matches!(parse(v), Err(LoadError::Config { .. })));
        let mut v = base();
        v.as_object_mut().unwrap().remove("vocab_size");
        let err = parse(v).unwrap_err().to_string();
        assert!(err.contains("vocab_size"), "{err}");
    }
}
