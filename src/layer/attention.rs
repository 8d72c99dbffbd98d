//! Multi-head attention (`type: AttentionLayer`) in `standard` and `gqa` modes (`decoupled`: see
//! `decoupled.rs`).
//!
//! softmax(q·kᵀ/√head_dim + causal mask)·v with RoPE (HF half-split) on q and k. In GQA mode
//! `n_kv_heads` divides `n_heads` and KV head j serves query heads [j·g, (j+1)·g) (HF `repeat_kv`
//! order); the query heads of a group are folded into the time axis instead of copying K/V.
//! Shapes: (b, t, d_model) -> (b, t, d_model). Weight names follow HF Llama's `self_attn`.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::SpecProblem;
use super::dropout::apply_dropout;
use super::linear::{Projection, projection};
use crate::model::context::{ForwardCtx, TraceKind};
use crate::ops::rope::{Rope, RopeScaling};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionMode {
    /// One K/V head per query head.
    #[default]
    Standard,
    /// Grouped-query attention: `n_kv_heads` K/V heads shared by groups of query heads.
    Gqa,
    /// Decoupled Bottleneck Attention: semantic (no RoPE) + geometric (RoPE) paths, value bottleneck.
    Decoupled,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionSpec {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of K/V heads. Default: `n_heads` (required to differ in `gqa` mode).
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    /// `standard` or `gqa`. Default: standard.
    #[serde(default)]
    pub mode: AttentionMode,
    /// Total query width `n_heads · head_dim`. Default: `d_model`.
    #[serde(default)]
    pub attn_dim: Option<usize>,
    /// Per-head width. Default: `attn_dim / n_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Rotary position embedding on q and k. Default: true.
    #[serde(default = "yes")]
    pub rope_enabled: bool,
    /// RoPE base θ. Default: 10000.
    #[serde(default = "rope_base")]
    pub rope_base: f64,
    /// HF-style scaling dict (`rope_type: llama3`). Default: none.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Causal mask. Default: true.
    #[serde(default = "yes")]
    pub is_causal: bool,
    /// Dropout on attention probabilities while training. Default: 0.
    #[serde(default)]
    pub dropout_p: f64,
    /// Bias on the q/k/v/o projections. Default: false.
    #[serde(default)]
    pub bias: bool,
    /// DBA: semantic (no-RoPE) q/k width summed over query heads. Required in decoupled mode.
    #[serde(default)]
    pub sem_dim: Option<usize>,
    /// DBA: geometric (RoPE) q/k width summed over query heads. Required in decoupled mode.
    #[serde(default)]
    pub geo_dim: Option<usize>,
    /// DBA: value width summed over query heads (the value bottleneck). Default: `attn_dim`, else `d_model`.
    #[serde(default)]
    pub v_dim: Option<usize>,
    /// DBA: RoPE on the semantic path too. Default: false.
    #[serde(default)]
    pub rope_semantic: bool,
    /// DBA: semantic keys share the semantic query projection (needs n_kv_heads = n_heads). Default: false.
    #[serde(default)]
    pub tie_qk: bool,
    /// DBA: a learned, always-visible null key/value per KV head. Default: false.
    #[serde(default)]
    pub null_attn: bool,
    /// DBA: a learned per-head gate between the two paths (q_sem·2g, q_geo·(2−2g)). Default: false.
    #[serde(default)]
    pub decoupled_gate: bool,
    /// DBA: the gate also depends on the token (a zero-initialised d_model → n_heads map). Default: false.
    #[serde(default)]
    pub decoupled_gate_dynamic: bool,
}

fn yes() -> bool {
    true
}
fn rope_base() -> f64 {
    10000.0
}

impl AttentionSpec {
    /// Standard attention with every optional field at its default.
    pub fn new(d_model: usize, n_heads: usize) -> Self {
        Self {
            d_model,
            n_heads,
            n_kv_heads: None,
            mode: AttentionMode::Standard,
            attn_dim: None,
            head_dim: None,
            rope_enabled: true,
            rope_base: rope_base(),
            rope_scaling: None,
            is_causal: true,
            dropout_p: 0.0,
            bias: false,
            sem_dim: None,
            geo_dim: None,
            v_dim: None,
            rope_semantic: false,
            tie_qk: false,
            null_attn: false,
            decoupled_gate: false,
            decoupled_gate_dynamic: false,
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    pub fn head_dim(&self) -> usize {
        match self.head_dim {
            Some(h) => h,
            None => self.attn_dim.unwrap_or(self.d_model) / self.n_heads.max(1),
        }
    }

    /// K/V values cached per token by this layer (multiply by the storage bytes per value).
    pub fn cache_values_per_token(&self) -> usize {
        match self.mode {
            AttentionMode::Decoupled => super::decoupled::DecoupledDims::of(self).cache_values_per_token(),
            _ => 2 * self.kv_heads() * self.head_dim(),
        }
    }

    fn decoupled_problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let nh = self.n_heads;
        for (field, value, even) in [
            ("sem_dim", self.sem_dim, self.rope_enabled && self.rope_semantic),
            ("geo_dim", self.geo_dim, self.rope_enabled),
        ] {
            match value {
                None => out.push(SpecProblem::new(field, "required in `mode: decoupled`")),
                Some(0) => out.push(SpecProblem::new(field, "must be at least n_heads")),
                Some(w) if w % nh != 0 => out.push(SpecProblem::new(
                    field,
                    format!("{w} is not divisible by n_heads = {nh} (it is a total over query heads)"),
                )),
                Some(w) if even && (w / nh) % 2 != 0 => out.push(SpecProblem::new(
                    field,
                    format!(
                        "RoPE rotates pairs, so the per-head width {w}/{nh} = {} must be even",
                        w / nh
                    ),
                )),
                _ => {}
            }
        }
        let v = self.v_dim.or(self.attn_dim).unwrap_or(self.d_model);
        if v == 0 || v % nh != 0 {
            out.push(SpecProblem::new(
                "v_dim",
                format!("{v} is not a positive multiple of n_heads = {nh}"),
            ));
        }
        let kv = self.kv_heads();
        if self.tie_qk && kv != nh {
            out.push(SpecProblem::new(
                "tie_qk",
                "needs n_kv_heads = n_heads (keys reuse the query projection)",
            ));
        }
        if self.decoupled_gate_dynamic && !self.decoupled_gate {
            out.push(SpecProblem::new(
                "decoupled_gate_dynamic",
                "needs `decoupled_gate: true`",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout_p) {
            out.push(SpecProblem::new("dropout_p", "must be in [0, 1)"));
        }
        out
    }

    /// Every inconsistency of this spec (the validator adds the manifest path).
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        if self.n_heads == 0 {
            out.push(SpecProblem::new("n_heads", "must be at least 1"));
            return out;
        }
        if self.mode == AttentionMode::Decoupled {
            let kv = self.kv_heads();
            if kv == 0 || self.n_heads % kv != 0 {
                out.push(SpecProblem::new(
                    "n_kv_heads",
                    format!(
                        "n_heads = {} must be a multiple of n_kv_heads = {kv}",
                        self.n_heads
                    ),
                ));
            }
            out.extend(self.decoupled_problems());
            return out;
        }
        let attn_dim = self.attn_dim.unwrap_or(self.d_model);
        match self.head_dim {
            Some(h) if h * self.n_heads != attn_dim && self.attn_dim.is_some() => out.push(SpecProblem::new(
                "head_dim",
                format!(
                    "n_heads ({}) × head_dim ({h}) = {} but attn_dim is {attn_dim}",
                    self.n_heads,
                    h * self.n_heads
                ),
            )),
            Some(0) => out.push(SpecProblem::new("head_dim", "must be at least 1")),
            None if attn_dim % self.n_heads != 0 => out.push(SpecProblem::new(
                "n_heads",
                format!(
                    "attention width {attn_dim} is not divisible by n_heads = {}",
                    self.n_heads
                ),
            )),
            _ => {}
        }
        let kv = self.kv_heads();
        if kv == 0 || self.n_heads % kv != 0 {
            out.push(SpecProblem::new(
                "n_kv_heads",
                format!(
                    "n_heads = {} must be a multiple of n_kv_heads = {kv}",
                    self.n_heads
                ),
            ));
        }
        let dba_only = [
            ("sem_dim", self.sem_dim.is_some()),
            ("geo_dim", self.geo_dim.is_some()),
            ("v_dim", self.v_dim.is_some()),
            ("rope_semantic", self.rope_semantic),
            ("tie_qk", self.tie_qk),
            ("null_attn", self.null_attn),
            ("decoupled_gate", self.decoupled_gate),
            ("decoupled_gate_dynamic", self.decoupled_gate_dynamic),
        ];
        for (field, set) in dba_only {
            if set {
                out.push(SpecProblem::new(field, "only applies to `mode: decoupled`"));
            }
        }
        if self.mode == AttentionMode::Standard && kv != self.n_heads {
            out.push(SpecProblem::new(
                "n_kv_heads",
                "differs from n_heads: use `mode: gqa`",
            ));
        }
        if self.rope_enabled && self.head_dim() % 2 != 0 {
            out.push(SpecProblem::new(
                "head_dim",
                format!(
                    "RoPE rotates pairs, so head_dim must be even (got {})",
                    self.head_dim()
                ),
            ));
        }
        if let Some(s) = &self.rope_scaling {
            if s.rope_type != "llama3" {
                out.push(SpecProblem::new(
                    "rope_scaling.rope_type",
                    format!("unsupported rope type `{}` (supported: llama3)", s.rope_type),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout_p) {
            out.push(SpecProblem::new("dropout_p", "must be in [0, 1)"));
        }
        out
    }
}

pub struct Attention {
    q: Projection,
    k: Projection,
    v: Projection,
    o: Projection,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    rope: Option<Rope>,
    causal: bool,
    dropout_p: f64,
    /// Index of this layer's KV cache slot.
    slot: usize,
    path: String,
}

impl Attention {
    /// Weights at `<path>.{q_proj,k_proj,v_proj,o_proj}`; `slot` indexes its KV cache.
    pub fn build(spec: &AttentionSpec, slot: usize, vb: VarBuilder) -> Result<Self> {
        let (nh, nkv, hd) = (spec.n_heads, spec.kv_heads(), spec.head_dim());
        let d = spec.d_model;
        Ok(Self {
            q: projection(d, nh * hd, spec.bias, vb.pp("q_proj"))?,
            k: projection(d, nkv * hd, spec.bias, vb.pp("k_proj"))?,
            v: projection(d, nkv * hd, spec.bias, vb.pp("v_proj"))?,
            o: projection(nh * hd, d, spec.bias, vb.pp("o_proj"))?,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            rope: spec
                .rope_enabled
                .then(|| Rope::new(hd, spec.rope_base, spec.rope_scaling.as_ref())),
            causal: spec.is_causal,
            dropout_p: spec.dropout_p,
            slot,
            path: vb.prefix(),
        })
    }

    pub fn slot(&self) -> usize {
        self.slot
    }

    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let heads = |x: Tensor, n: usize| x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
        let mut q = heads(self.q.forward(xs)?, nh)?;
        let mut k = heads(self.k.forward(xs)?, nkv)?;
        let v = heads(self.v.forward(xs)?, nkv)?;
        if let Some(rope) = &self.rope {
            q = rope.apply(&q, ctx.pos_offset, ctx.train)?;
            k = rope.apply(&k, ctx.pos_offset, ctx.train)?;
        }
        if let Some(cache) = ctx.cache.as_deref_mut()
            && let Some(kinds) = cache.quant
        {
            // Quantized cache: append, then attend over the stored rows without dequantizing them all.
            let store = cache.quant_store(self.slot, || crate::cache::QuantKvSpec {
                rotate_k: kinds.rotate_k,
                center_k: kinds.center_k,
                rotate_v: kinds.rotate_v,
                ..crate::cache::QuantKvSpec::uniform(b, nkv, hd, kinds.k, kinds.v)
            })?;
            store.append(&k, &v)?;
            let q = (q * (1.0 / (hd as f64).sqrt()))?;
            let out = store.attend(&q, None, crate::cache::DecodeOptions::default())?; // (b, nh, t, hd)
            let out = self.o.forward(&out.transpose(1, 2)?.reshape((b, t, nh * hd))?)?;
            ctx.record(TraceKind::Attention, &self.path, &out);
            ctx.finished_slot(self.slot);
            return Ok(out);
        }
        let mut pad_mask = None;
        let (k, v) = match ctx.cache.as_deref_mut() {
            Some(cache) => {
                let (dtype, stored) = (k.dtype(), cache.dtype);
                let slot = cache
                    .plain_slot(self.slot)
                    .map_err(|e| e.context(self.path.clone()))?;
                let (k, v) = slot.append(&k.to_dtype(stored)?, &v.to_dtype(stored)?)?;
                pad_mask = cache.padding_mask(t, k.dim(2)?, xs.device())?;
                (k.to_dtype(dtype)?, v.to_dtype(dtype)?)
            }
            None => (k, v),
        };
        let kt = k.dim(2)?;
        let scale = 1.0 / (hd as f64).sqrt();
        if !ctx.train && t == 1 && pad_mask.is_none() {
            // One decode step on a GPU: the fused kernel reads the cache once (None elsewhere).
            let segments = crate::kernels::KeySegments {
                sem_dim: 0,
                geo_dim: hd,
            };
            let scales = crate::kernels::DecodeScales {
                sem: 0.0,
                geo: scale as f32,
            };
            if let Some(out) = crate::kernels::decode_attention(&q, &k, &v, segments, scales, None)? {
                let out = self.o.forward(&out.transpose(1, 2)?.reshape((b, t, nh * hd))?)?;
                ctx.record(TraceKind::Attention, &self.path, &out);
                ctx.finished_slot(self.slot);
                return Ok(out);
            }
        }
        // Fold the g query heads of each KV group into the time axis: (b, nkv, g·t, hd).
        let g = nh / nkv;
        // why: scaling q costs a pass over (t, hd) instead of one over the (t, kt) scores.
        let q = (q.reshape((b, nkv, g * t, hd))? * scale)?;
        let out = if ctx.train && self.dropout_p == 0.0 && pad_mask.is_none() {
            // Training: one op whose backward recomputes the probabilities (see sdpa.rs).
            crate::ops::sdpa::recomputing_attention(&q, &k, &v, self.causal, g, t, 0)?
        } else {
            let scores = q.matmul(&k.t()?)?; // (b, nkv, g·t, kt)
            let scores = if let Some(mask) = pad_mask.filter(|_| self.causal) {
                let mask = mask.to_dtype(scores.dtype())?;
                scores
                    .reshape((b, nkv, g, t, kt))?
                    .broadcast_add(&mask)?
                    .reshape((b, nkv, g * t, kt))?
            } else if self.causal && t > 1 {
                let mask = crate::ops::sdpa::cached_causal_mask(t, kt, 0, xs.device(), scores.dtype())?;
                scores
                    .reshape((b, nkv, g, t, kt))?
                    .broadcast_add(&mask)?
                    .reshape((b, nkv, g * t, kt))?
            } else {
                scores
            };
            let probs = if ctx.train {
                crate::ops::softmax::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            } else {
                candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            }
            .to_dtype(v.dtype())?;
            let probs = apply_dropout(&probs, self.dropout_p, ctx.train, ctx.rng.as_deref_mut())?;
            probs.matmul(&v.contiguous()?)? // (b, nkv, g·t, hd)
        };
        let out = out
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        let out = self.o.forward(&out)?;
        ctx.record(TraceKind::Attention, &self.path, &out);
        ctx.finished_slot(self.slot);
        Ok(out)
    }
}
