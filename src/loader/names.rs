//! The one place where checkpoint tensor names meet caramba topology paths.
//!
//! [`LlamaConfig::model_spec`](super::LlamaConfig::model_spec) builds
//! `topology.layers.{i}` = Nested[Residual[RMSNorm, Attention], Residual[RMSNorm, SwiGLU]], then the
//! final RMSNorm at `topology.layers.{n_layers}` and, when untied, the head at
//! `topology.layers.{n_layers + 1}`; the embedding table is `embedder.weight`. Each parameter is
//! listed here with its HF name, its GGUF name and its shape.

use super::LlamaConfig;

/// One parameter of a Llama model under its three names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamName {
    /// Topology path used by [`crate::model::LanguageModel::build`].
    pub path: String,
    /// HF transformers name (`model.layers.0.self_attn.q_proj.weight`).
    pub hf: String,
    /// GGUF (llama.cpp) name (`blk.0.attn_q.weight`).
    pub gguf: String,
    /// Expected shape (out, in) for matrices, (d,) for vectors.
    pub shape: Vec<usize>,
    /// For q/k projections: the number of heads whose rows llama.cpp's converter permuted into
    /// interleaved-RoPE order (GGUF files only).
    pub rope_heads: Option<usize>,
}

/// Per block: (topology suffix under `topology.layers.{i}`, HF suffix under `model.layers.{i}`,
/// GGUF suffix under `blk.{i}`).
const BLOCK: &[(&str, &str, &str)] = &[
    (
        "layers.0.layers.0.weight",
        "input_layernorm.weight",
        "attn_norm.weight",
    ),
    (
        "layers.0.layers.1.q_proj.weight",
        "self_attn.q_proj.weight",
        "attn_q.weight",
    ),
    (
        "layers.0.layers.1.k_proj.weight",
        "self_attn.k_proj.weight",
        "attn_k.weight",
    ),
    (
        "layers.0.layers.1.v_proj.weight",
        "self_attn.v_proj.weight",
        "attn_v.weight",
    ),
    (
        "layers.0.layers.1.o_proj.weight",
        "self_attn.o_proj.weight",
        "attn_output.weight",
    ),
    (
        "layers.1.layers.0.weight",
        "post_attention_layernorm.weight",
        "ffn_norm.weight",
    ),
    (
        "layers.1.layers.1.gate_proj.weight",
        "mlp.gate_proj.weight",
        "ffn_gate.weight",
    ),
    (
        "layers.1.layers.1.up_proj.weight",
        "mlp.up_proj.weight",
        "ffn_up.weight",
    ),
    (
        "layers.1.layers.1.down_proj.weight",
        "mlp.down_proj.weight",
        "ffn_down.weight",
    ),
];

/// Every parameter of the model `cfg` describes, in load order.
pub fn llama_params(cfg: &LlamaConfig) -> Vec<ParamName> {
    let (d, f, v) = (cfg.d_model, cfg.d_ff, cfg.vocab_size);
    let (q, kv) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let mut out = vec![ParamName {
        path: "embedder.weight".into(),
        hf: "model.embed_tokens.weight".into(),
        gguf: "token_embd.weight".into(),
        shape: vec![v, d],
        rope_heads: None,
    }];
    for i in 0..cfg.n_layers {
        for (path, hf, gguf) in BLOCK {
            let (shape, rope_heads) = match *gguf {
                "attn_norm.weight" | "ffn_norm.weight" => (vec![d], None),
                "attn_q.weight" => (vec![q, d], Some(cfg.n_heads)),
                "attn_k.weight" => (vec![kv, d], Some(cfg.n_kv_heads)),
                "attn_v.weight" => (vec![kv, d], None),
                "attn_output.weight" => (vec![d, q], None),
                "ffn_gate.weight" | "ffn_up.weight" => (vec![f, d], None),
                _ => (vec![d, f], None),
            };
            out.push(ParamName {
                path: format!("topology.layers.{i}.{path}"),
                hf: format!("model.layers.{i}.{hf}"),
                gguf: format!("blk.{i}.{gguf}"),
                shape,
                rope_heads,
            });
        }
        let bias = |path: &str, hf: &str, gguf: &str, n: usize, rope_heads: Option<usize>| ParamName {
            path: format!("topology.layers.{i}.{path}"),
            hf: format!("model.layers.{i}.{hf}"),
            gguf: format!("blk.{i}.{gguf}"),
            shape: vec![n],
            rope_heads,
        };
        if cfg.attention_bias {
            out.push(bias(
                "layers.0.layers.1.q_proj.bias",
                "self_attn.q_proj.bias",
                "attn_q.bias",
                q,
                Some(cfg.n_heads),
            ));
            out.push(bias(
                "layers.0.layers.1.k_proj.bias",
                "self_attn.k_proj.bias",
                "attn_k.bias",
                kv,
                Some(cfg.n_kv_heads),
            ));
            out.push(bias(
                "layers.0.layers.1.v_proj.bias",
                "self_attn.v_proj.bias",
                "attn_v.bias",
                kv,
                None,
            ));
            out.push(bias(
                "layers.0.layers.1.o_proj.bias",
                "self_attn.o_proj.bias",
                "attn_output.bias",
                d,
                None,
            ));
        }
        if cfg.mlp_bias {
            out.push(bias(
                "layers.1.layers.1.gate_proj.bias",
                "mlp.gate_proj.bias",
                "ffn_gate.bias",
                f,
                None,
            ));
            out.push(bias(
                "layers.1.layers.1.up_proj.bias",
                "mlp.up_proj.bias",
                "ffn_up.bias",
                f,
                None,
            ));
            out.push(bias(
                "layers.1.layers.1.down_proj.bias",
                "mlp.down_proj.bias",
                "ffn_down.bias",
                d,
                None,
            ));
        }
    }
    let n = cfg.n_layers;
    out.push(ParamName {
        path: format!("topology.layers.{n}.weight"),
        hf: "model.norm.weight".into(),
        gguf: "output_norm.weight".into(),
        shape: vec![d],
        rope_heads: None,
    });
    if !cfg.tied_embeddings {
        out.push(ParamName {
            path: format!("topology.layers.{}.weight", n + 1),
            hf: "lm_head.weight".into(),
            gguf: "output.weight".into(),
            shape: vec![v, d],
            rope_heads: None,
        });
    }
    out
}

/// Undo llama.cpp's q/k row permutation of one (out, …) row-major matrix stored as `row_bytes`
/// bytes per row: GGUF row `h·hd + 2j + s` holds HF row `h·hd + s·hd/2 + j` (s ∈ {0, 1}).
pub fn unpermute_rows(data: &[u8], n_heads: usize, rows: usize, row_bytes: usize) -> Vec<u8> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..n_heads {
        for s in 0..2 {
            for j in 0..half {
                let src = h * hd + 2 * j + s;
                let dst = h * hd + s * half + j;
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        // llama.cpp: w.reshape(n_head, 2, hd/2, …).swapaxes(1, 2).reshape(w.shape)
        let (n_heads, hd, row_bytes) = (3, 8, 5);
        let rows = n_heads * hd;
        let hf: Vec<u8> = (0..rows * row_bytes).map(|i| (i * 7 % 251) as u8).collect();
        let mut gguf = vec![0u8; hf.len()];
        for h in 0..n_heads {
            for s in 0..2 {
                for j in 0..hd / 2 {
                    let hf_row = h * hd + s * hd / 2 + j;
                    let gguf_row = h * hd + j * 2 + s;
                    gguf[gguf_row * row_bytes..(gguf_row + 1) * row_bytes]
                        .copy_from_slice(&hf[hf_row * row_bytes..(hf_row + 1) * row_bytes]);
                }
            }
        }
        assert_eq!(unpermute_rows(&gguf, n_heads, rows, row_bytes), hf);
    }
}
