//! Multi-head attention (`type: AttentionLayer`) in `standard` and `gqa` modes (`decoupled`: see
//! `decoupled.rs`), and the layer's spec: a mode enum lowered from the flat manifest mapping.
//!
//! softmax(q·kᵀ/√head_dim + causal mask)·v with RoPE (HF half-split) on q and k. In GQA mode
//! `n_kv_heads` divides `n_heads` and KV head j serves query heads [j·g, (j+1)·g) (HF `repeat_kv`
//! order); the query heads of a group are folded into the time axis instead of copying K/V.
//! Shapes: (b, t, d_model) -> (b, t, d_model). Weight names follow HF Llama's `self_attn`.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Module, VarBuilder};
use serde::{Deserialize, Serialize};

use std::fmt::Write as _;

use super::decoupled::{DecoupledAttention, DecoupledDims};
use super::dropout::apply_dropout;
use super::linear::{Projection, projection};
use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim};
use crate::cache::CacheKind;
use crate::model::context::{ForwardCtx, TraceKind};
use crate::ops::rope::{Rope, RopeScaling};
use crate::topology::PATH_SEP;

/// How the heads are laid out: the manifest's `mode:` with the fields only that mode has.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AttentionMode {
    /// One K/V head per query head.
    #[default]
    Standard,
    /// Grouped-query attention: `n_kv_heads` K/V heads shared by groups of query heads.
    Gqa,
    /// Decoupled Bottleneck Attention: semantic (no RoPE) + geometric (RoPE) paths, value bottleneck.
    Decoupled(DecoupledSpec),
}

impl AttentionMode {
    /// The manifest spelling (`standard`, `gqa`, `decoupled`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Gqa => "gqa",
            Self::Decoupled(_) => "decoupled",
        }
    }
}

/// The fields of `mode: decoupled` (DBA); in the manifest they sit beside the others.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoupledSpec {
    /// Semantic (no-RoPE) q/k width summed over query heads. Required.
    pub sem_dim: usize,
    /// Geometric (RoPE) q/k width summed over query heads. Required.
    pub geo_dim: usize,
    /// Value width summed over query heads (the value bottleneck). Default: `attn_dim`, else `d_model`.
    pub v_dim: Option<usize>,
    /// RoPE on the semantic path too. Default: false.
    pub rope_semantic: bool,
    /// Semantic keys share the semantic query projection (needs n_kv_heads = n_heads). Default: false.
    pub tie_qk: bool,
    /// A learned, always-visible null key/value per KV head. Default: false.
    pub null_attn: bool,
    /// A learned per-head gate between the two paths (q_sem·2g, q_geo·(2−2g)). Default: false.
    pub decoupled_gate: bool,
    /// The gate also depends on the token (a zero-initialised d_model → n_heads map). Default: false.
    pub decoupled_gate_dynamic: bool,
}

impl DecoupledSpec {
    /// Required widths, every option at its default.
    pub fn new(sem_dim: usize, geo_dim: usize) -> Self {
        Self {
            sem_dim,
            geo_dim,
            v_dim: None,
            rope_semantic: false,
            tie_qk: false,
            null_attn: false,
            decoupled_gate: false,
            decoupled_gate_dynamic: false,
        }
    }
}

/// `type: AttentionLayer`. Deserialized from the flat manifest mapping ([`RawAttentionSpec`]) and
/// lowered into [`AttentionMode`]: a DBA-only field outside `mode: decoupled`, or a missing
/// `sem_dim`/`geo_dim` in it, is an error at that field.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawAttentionSpec", into = "RawAttentionSpec")]
pub struct AttentionSpec {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of K/V heads. Default: `n_heads` (required to differ in `gqa` mode).
    pub n_kv_heads: Option<usize>,
    /// `standard`, `gqa` or `decoupled` (with its fields). Default: standard.
    pub mode: AttentionMode,
    /// Total query width `n_heads · head_dim`. Default: `d_model`.
    pub attn_dim: Option<usize>,
    /// Per-head width. Default: `attn_dim / n_heads`.
    pub head_dim: Option<usize>,
    /// Rotary position embedding on q and k. Default: true.
    pub rope_enabled: bool,
    /// RoPE base θ. Default: 10000.
    pub rope_base: f64,
    /// HF-style scaling dict (`rope_type: llama3`). Default: none.
    pub rope_scaling: Option<RopeScaling>,
    /// Causal mask. Default: true.
    pub is_causal: bool,
    /// Dropout on attention probabilities while training. Default: 0.
    pub dropout_p: f64,
    /// Bias on the q/k/v/o projections. Default: false.
    pub bias: bool,
}

/// The manifest's `mode:` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum ModeName {
    #[default]
    Standard,
    Gqa,
    Decoupled,
}

/// `AttentionLayer` exactly as a manifest writes it (flat, DBA fields optional).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttentionSpec {
    d_model: usize,
    n_heads: usize,
    #[serde(default)]
    n_kv_heads: Option<usize>,
    #[serde(default)]
    mode: ModeName,
    #[serde(default)]
    attn_dim: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "yes")]
    rope_enabled: bool,
    #[serde(default = "rope_base")]
    rope_base: f64,
    #[serde(default)]
    rope_scaling: Option<RopeScaling>,
    #[serde(default = "yes")]
    is_causal: bool,
    #[serde(default)]
    dropout_p: f64,
    #[serde(default)]
    bias: bool,
    #[serde(default)]
    sem_dim: Option<usize>,
    #[serde(default)]
    geo_dim: Option<usize>,
    #[serde(default)]
    v_dim: Option<usize>,
    #[serde(default)]
    rope_semantic: bool,
    #[serde(default)]
    tie_qk: bool,
    #[serde(default)]
    null_attn: bool,
    #[serde(default)]
    decoupled_gate: bool,
    #[serde(default)]
    decoupled_gate_dynamic: bool,
}

fn yes() -> bool {
    true
}
fn rope_base() -> f64 {
    10000.0
}

impl TryFrom<RawAttentionSpec> for AttentionSpec {
    /// `field␟message` ([`PATH_SEP`]), so the manifest loader points at the field.
    type Error = String;

    fn try_from(r: RawAttentionSpec) -> std::result::Result<Self, String> {
        let at = |field: &str, message: &str| format!("{field}{PATH_SEP}{message}");
        let mode = match r.mode {
            ModeName::Decoupled => {
                let (Some(sem_dim), Some(geo_dim)) = (r.sem_dim, r.geo_dim) else {
                    let field = if r.sem_dim.is_none() { "sem_dim" } else { "geo_dim" };
                    return Err(at(field, "required in `mode: decoupled`"));
                };
                AttentionMode::Decoupled(DecoupledSpec {
                    sem_dim,
                    geo_dim,
                    v_dim: r.v_dim,
                    rope_semantic: r.rope_semantic,
                    tie_qk: r.tie_qk,
                    null_attn: r.null_attn,
                    decoupled_gate: r.decoupled_gate,
                    decoupled_gate_dynamic: r.decoupled_gate_dynamic,
                })
            }
            other => {
                let dba_only = [
                    ("sem_dim", r.sem_dim.is_some()),
                    ("geo_dim", r.geo_dim.is_some()),
                    ("v_dim", r.v_dim.is_some()),
                    ("rope_semantic", r.rope_semantic),
                    ("tie_qk", r.tie_qk),
                    ("null_attn", r.null_attn),
                    ("decoupled_gate", r.decoupled_gate),
                    ("decoupled_gate_dynamic", r.decoupled_gate_dynamic),
                ];
                if let Some(&(field, _)) = dba_only.iter().find(|(_, set)| *set) {
                    return Err(at(field, "only applies to `mode: decoupled`"));
                }
                if other == ModeName::Gqa {
                    AttentionMode::Gqa
                } else {
                    AttentionMode::Standard
                }
            }
        };
        Ok(Self {
            d_model: r.d_model,
            n_heads: r.n_heads,
            n_kv_heads: r.n_kv_heads,
            mode,
            attn_dim: r.attn_dim,
            head_dim: r.head_dim,
            rope_enabled: r.rope_enabled,
            rope_base: r.rope_base,
            rope_scaling: r.rope_scaling,
            is_causal: r.is_causal,
            dropout_p: r.dropout_p,
            bias: r.bias,
        })
    }
}

impl From<AttentionSpec> for RawAttentionSpec {
    fn from(s: AttentionSpec) -> Self {
        let (mode, dba) = match s.mode {
            AttentionMode::Standard => (ModeName::Standard, None),
            AttentionMode::Gqa => (ModeName::Gqa, None),
            AttentionMode::Decoupled(d) => (ModeName::Decoupled, Some(d)),
        };
        Self {
            d_model: s.d_model,
            n_heads: s.n_heads,
            n_kv_heads: s.n_kv_heads,
            mode,
            attn_dim: s.attn_dim,
            head_dim: s.head_dim,
            rope_enabled: s.rope_enabled,
            rope_base: s.rope_base,
            rope_scaling: s.rope_scaling,
            is_causal: s.is_causal,
            dropout_p: s.dropout_p,
            bias: s.bias,
            sem_dim: dba.as_ref().map(|d| d.sem_dim),
            geo_dim: dba.as_ref().map(|d| d.geo_dim),
            v_dim: dba.as_ref().and_then(|d| d.v_dim),
            rope_semantic: dba.as_ref().is_some_and(|d| d.rope_semantic),
            tie_qk: dba.as_ref().is_some_and(|d| d.tie_qk),
            null_attn: dba.as_ref().is_some_and(|d| d.null_attn),
            decoupled_gate: dba.as_ref().is_some_and(|d| d.decoupled_gate),
            decoupled_gate_dynamic: dba.as_ref().is_some_and(|d| d.decoupled_gate_dynamic),
        }
    }
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
        }
    }

    /// The DBA fields, in `mode: decoupled`.
    pub fn decoupled(&self) -> Option<&DecoupledSpec> {
        match &self.mode {
            AttentionMode::Decoupled(d) => Some(d),
            AttentionMode::Standard | AttentionMode::Gqa => None,
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
            AttentionMode::Decoupled(_) => super::decoupled::DecoupledDims::of(self).cache_values_per_token(),
            AttentionMode::Standard | AttentionMode::Gqa => 2 * self.kv_heads() * self.head_dim(),
        }
    }

    fn decoupled_problems(&self, dba: &DecoupledSpec) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let nh = self.n_heads;
        for (field, w, even) in [
            ("sem_dim", dba.sem_dim, self.rope_enabled && dba.rope_semantic),
            ("geo_dim", dba.geo_dim, self.rope_enabled),
        ] {
            if w == 0 {
                out.push(SpecProblem::new(field, "must be at least n_heads"));
            } else if w % nh != 0 {
                out.push(SpecProblem::new(
                    field,
                    format!("{w} is not divisible by n_heads = {nh} (it is a total over query heads)"),
                ));
            } else if even && (w / nh) % 2 != 0 {
                out.push(SpecProblem::new(
                    field,
                    format!(
                        "RoPE rotates pairs, so the per-head width {w}/{nh} = {} must be even",
                        w / nh
                    ),
                ));
            }
        }
        let v = dba.v_dim.or(self.attn_dim).unwrap_or(self.d_model);
        if v == 0 || v % nh != 0 {
            out.push(SpecProblem::new(
                "v_dim",
                format!("{v} is not a positive multiple of n_heads = {nh}"),
            ));
        }
        let kv = self.kv_heads();
        if dba.tie_qk && kv != nh {
            out.push(SpecProblem::new(
                "tie_qk",
                "needs n_kv_heads = n_heads (keys reuse the query projection)",
            ));
        }
        if dba.decoupled_gate_dynamic && !dba.decoupled_gate {
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

    /// Inconsistencies between the head counts and widths (the sizes are within bounds).
    fn shape_problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        if self.n_heads == 0 {
            out.push(SpecProblem::new("n_heads", "must be at least 1"));
            return out;
        }
        if let AttentionMode::Decoupled(dba) = &self.mode {
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
            out.extend(self.decoupled_problems(dba));
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

fn mul(a: usize, b: usize) -> u64 {
    (a as u64).saturating_mul(b as u64)
}

impl LayerType for AttentionSpec {
    const NAME: &'static str = "AttentionLayer";
    const ALIASES: &'static [&'static str] = &["attention"];
}

impl LayerSpec for AttentionSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let mut dims_ok = check_dim(&mut out, "d_model", self.d_model);
        dims_ok &= check_dim(&mut out, "n_heads", self.n_heads);
        for (name, v) in [
            ("n_kv_heads", self.n_kv_heads),
            ("attn_dim", self.attn_dim),
            ("head_dim", self.head_dim),
        ] {
            if let Some(v) = v {
                dims_ok &= check_dim(&mut out, name, v);
            }
        }
        if dims_ok {
            out.extend(self.shape_problems());
        }
        if self.rope_enabled && !(self.rope_base.is_finite() && self.rope_base > 0.0) {
            out.push(SpecProblem::new(
                "rope_base",
                format!("must be a positive number (got {})", self.rope_base),
            ));
        }
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths::preserving("d_model", self.d_model))
    }

    /// q/k/v/o: d·n_heads·head_dim + 2·d·n_kv_heads·head_dim + n_heads·head_dim·d (+ biases); DBA:
    /// its q_sem/k_sem/q_geo/k_geo/v/o projections, gate and null key/value.
    fn params(&self) -> u64 {
        let d = self.d_model;
        if let AttentionMode::Decoupled(dba) = &self.mode {
            let dims = DecoupledDims::of(self);
            let (nh, nkv) = (dims.n_heads, dims.n_kv_heads);
            let (sh, gh, vh) = (dims.sem_head_dim, dims.geo_head_dim, dims.v_head_dim);
            let k_sem = if dba.tie_qk { 0 } else { nkv * sh };
            let outs = nh * sh + k_sem + nh * gh + nkv * gh + nkv * vh;
            let mut n = mul(d, outs).saturating_add(mul(nh * vh, d));
            if self.bias {
                n = n.saturating_add((outs + d) as u64);
            }
            if dba.decoupled_gate {
                n = n.saturating_add(nh as u64);
                if dba.decoupled_gate_dynamic {
                    n = n.saturating_add(mul(d, nh));
                }
            }
            if dba.null_attn {
                n = n.saturating_add((nkv * (sh + gh + vh)) as u64);
            }
            return n;
        }
        let (q, kv) = (self.n_heads * self.head_dim(), self.kv_heads() * self.head_dim());
        let weights = mul(d, q)
            .saturating_add(mul(d, kv).saturating_mul(2))
            .saturating_add(mul(q, d));
        let bias = if self.bias { (q + 2 * kv + d) as u64 } else { 0 };
        weights.saturating_add(bias)
    }

    fn kv_values_per_token(&self) -> u64 {
        self.cache_values_per_token() as u64
    }

    /// Blocks never straddle heads or DBA's sem/geo segments.
    fn kv_bytes_per_token(&self, kind: CacheKind) -> u64 {
        let kv = self.kv_heads();
        let bytes = match self.mode {
            AttentionMode::Decoupled(_) => {
                let d = DecoupledDims::of(self);
                kv * (kind.row_bytes(d.sem_head_dim)
                    + kind.row_bytes(d.geo_head_dim)
                    + kind.row_bytes(d.v_head_dim))
            }
            AttentionMode::Standard | AttentionMode::Gqa => 2 * kv * kind.row_bytes(self.head_dim()),
        };
        bytes as u64
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "d_model={} n_heads={} n_kv_heads={} head_dim={} mode={}",
            self.d_model,
            self.n_heads,
            self.kv_heads(),
            self.head_dim(),
            self.mode.name()
        );
        if self.decoupled().is_some() {
            let d = DecoupledDims::of(self);
            let _ = write!(
                s,
                " sem_head_dim={} geo_head_dim={} v_head_dim={}",
                d.sem_head_dim, d.geo_head_dim, d.v_head_dim
            );
        }
        let _ = write!(s, " kv_values_per_token={}", self.cache_values_per_token());
        if self.rope_enabled {
            let _ = write!(s, " rope_base={}", self.rope_base);
            if let Some(sc) = &self.rope_scaling {
                let _ = write!(s, " rope_scaling={}", sc.rope_type);
            }
        } else {
            s.push_str(" rope=off");
        }
        if !self.is_causal {
            s.push_str(" causal=false");
        }
        if self.dropout_p > 0.0 {
            let _ = write!(s, " dropout_p={}", self.dropout_p);
        }
        if self.bias {
            s.push_str(" bias=true");
        }
        s
    }

    /// Standard/GQA → [`Attention`], decoupled → [`DecoupledAttention`]; one KV slot.
    fn build(&self, vb: VarBuilder, next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        let slot = *next_slot;
        *next_slot += 1;
        let layer: Box<dyn Layer> = match self.mode {
            AttentionMode::Decoupled(_) => Box::new(DecoupledAttention::build(self, slot, vb)?),
            AttentionMode::Standard | AttentionMode::Gqa => Box::new(Attention::build(self, slot, vb)?),
        };
        Ok(layer)
    }
}

impl Layer for Attention {
    fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        Attention::forward(self, xs, ctx)
    }

    fn kv_slot(&self) -> Option<usize> {
        Some(self.slot)
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
