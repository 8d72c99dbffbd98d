//! Decoupled Bottleneck Attention (`AttentionLayer` with `mode: decoupled`).
//!
//! Two query/key paths share one softmax: a semantic path without RoPE and a geometric path with
//! RoPE, `score = s_sem·⟨q_sem, k_sem⟩ + s_geo·⟨q_geo, k_geo⟩` with `s = 1/√(per-head dim)`, then
//! a value bottleneck of `v_dim`. Unlike the original, `n_kv_heads` is honoured for k_sem, k_geo
//! and v (GQA sharing), so the cache really holds `n_kv_heads · (sem + geo + v head dims)` values
//! per token. The cache stores `[k_sem ‖ k_geo]` (after RoPE, before the gate) as its K and v as
//! its V, so the plain KV cache serves DBA unchanged. Shapes: (b, t, d_model) -> (b, t, d_model).

use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, Linear, Module, VarBuilder};

use super::linear::linear;
use super::spec::Layer;
use super::{AttentionSpec, DecoupledSpec};
use crate::model::context::{ForwardCtx, TraceKind};
use crate::ops::rope::{HeadRope, Rope};
use crate::ops::sdpa::{AttendOptions, NullKv, grouped_attention};

/// Name of the optional (n_kv_heads, geo_head_dim/2) buffer of geometric RoPE frequencies that
/// surgery writes (each KV group keeps its own subset of the teacher's pairs). It is a buffer, not
/// a parameter: trainers must not update it (see [`crate::model::init::is_buffer`]).
pub const GEO_INV_FREQ: &str = "geo_inv_freq";

/// Per-head widths of a decoupled layer, derived from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoupledDims {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub sem_head_dim: usize,
    pub geo_head_dim: usize,
    pub v_head_dim: usize,
}

impl DecoupledDims {
    /// Widths of `spec`; the semantic and geometric widths are 0 outside `mode: decoupled`.
    pub fn of(spec: &AttentionSpec) -> Self {
        let nh = spec.n_heads.max(1);
        let dba = spec.decoupled();
        Self {
            n_heads: spec.n_heads,
            n_kv_heads: spec.kv_heads(),
            sem_head_dim: dba.map_or(0, |d| d.sem_dim) / nh,
            geo_head_dim: dba.map_or(0, |d| d.geo_dim) / nh,
            v_head_dim: dba
                .and_then(|d| d.v_dim)
                .or(spec.attn_dim)
                .unwrap_or(spec.d_model)
                / nh,
        }
    }

    /// Cached values per token for this layer: n_kv_heads · (sem + geo + v head dims).
    pub fn cache_values_per_token(&self) -> usize {
        self.n_kv_heads * (self.sem_head_dim + self.geo_head_dim + self.v_head_dim)
    }
}

impl Layer for DecoupledAttention {
    fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        DecoupledAttention::forward(self, xs, ctx)
    }

    fn kv_slot(&self) -> Option<usize> {
        Some(self.slot)
    }
}

pub struct DecoupledAttention {
    q_sem: Linear,
    /// `None` with `tie_qk`: the semantic keys use `q_sem`.
    k_sem: Option<Linear>,
    q_geo: Linear,
    k_geo: Linear,
    v: Linear,
    o: Linear,
    dims: DecoupledDims,
    rope_geo: Option<Rope>,
    /// Per-KV-head frequencies inherited from a teacher (replaces `rope_geo` when present).
    head_rope_geo: Option<HeadRope>,
    rope_sem: Option<Rope>,
    gate_logit: Option<Tensor>,
    gate_proj: Option<Linear>,
    null: Option<(Tensor, Tensor)>,
    causal: bool,
    dropout_p: f64,
    slot: usize,
    path: String,
}

impl DecoupledAttention {
    /// Weights at `<path>.{q_sem,k_sem,q_geo,k_geo,v_proj,o_proj}` (+ `gate_logit`, `gate_proj`,
    /// `k_null`, `v_null` when enabled).
    pub fn build(spec: &AttentionSpec, slot: usize, vb: VarBuilder) -> Result<Self> {
        let dims = DecoupledDims::of(spec);
        let dba = spec
            .decoupled()
            .cloned()
            .unwrap_or_else(|| DecoupledSpec::new(0, 0));
        let DecoupledDims {
            n_heads: nh,
            n_kv_heads: nkv,
            sem_head_dim: sh,
            geo_head_dim: gh,
            v_head_dim: vh,
        } = dims;
        let d = spec.d_model;
        let k_sem = if dba.tie_qk {
            None
        } else {
            Some(linear(d, nkv * sh, spec.bias, vb.pp("k_sem"))?)
        };
        let std = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Ok(Self {
            q_sem: linear(d, nh * sh, spec.bias, vb.pp("q_sem"))?,
            k_sem,
            q_geo: linear(d, nh * gh, spec.bias, vb.pp("q_geo"))?,
            k_geo: linear(d, nkv * gh, spec.bias, vb.pp("k_geo"))?,
            v: linear(d, nkv * vh, spec.bias, vb.pp("v_proj"))?,
            o: linear(nh * vh, d, spec.bias, vb.pp("o_proj"))?,
            dims,
            rope_geo: (spec.rope_enabled && gh > 0)
                .then(|| Rope::new(gh, spec.rope_base, spec.rope_scaling.as_ref())),
            head_rope_geo: if spec.rope_enabled && gh > 0 && vb.contains_tensor(GEO_INV_FREQ) {
                Some(HeadRope::new(vb.get((nkv, gh / 2), GEO_INV_FREQ)?)?)
            } else {
                None
            },
            rope_sem: (spec.rope_enabled && dba.rope_semantic && sh > 0)
                .then(|| Rope::new(sh, spec.rope_base, spec.rope_scaling.as_ref())),
            gate_logit: if dba.decoupled_gate {
                Some(vb.get_with_hints(nh, "gate_logit", Init::Const(0.0))?)
            } else {
                None
            },
            gate_proj: if dba.decoupled_gate && dba.decoupled_gate_dynamic {
                Some(Linear::new(
                    vb.get_with_hints((nh, d), "gate_proj.weight", Init::Const(0.0))?,
                    None,
                ))
            } else {
                None
            },
            null: if dba.null_attn {
                Some((
                    vb.get_with_hints((nkv, sh + gh), "k_null", std)?,
                    vb.get_with_hints((nkv, vh), "v_null", std)?,
                ))
            } else {
                None
            },
            causal: spec.is_causal,
            dropout_p: spec.dropout_p,
            slot,
            path: vb.prefix(),
        })
    }

    pub fn dims(&self) -> DecoupledDims {
        self.dims
    }

    pub fn slot(&self) -> usize {
        self.slot
    }

    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let DecoupledDims {
            n_heads: nh,
            n_kv_heads: nkv,
            sem_head_dim: sh,
            geo_head_dim: gh,
            v_head_dim: vh,
        } = self.dims;
        let heads = |x: Tensor, n: usize, hd: usize| x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
        let mut qs = heads(self.q_sem.forward(xs)?, nh, sh)?;
        let mut ks = heads(self.k_sem.as_ref().unwrap_or(&self.q_sem).forward(xs)?, nkv, sh)?;
        let mut qg = heads(self.q_geo.forward(xs)?, nh, gh)?;
        let mut kg = heads(self.k_geo.forward(xs)?, nkv, gh)?;
        let v = heads(self.v.forward(xs)?, nkv, vh)?;
        if let Some(rope) = &self.head_rope_geo {
            qg = rope.apply(&qg, ctx.pos_offset)?;
            kg = rope.apply(&kg, ctx.pos_offset)?;
        } else if let Some(rope) = &self.rope_geo {
            qg = rope.apply(&qg, ctx.pos_offset, ctx.train)?;
            kg = rope.apply(&kg, ctx.pos_offset, ctx.train)?;
        }
        if let Some(rope) = &self.rope_sem {
            qs = rope.apply(&qs, ctx.pos_offset, ctx.train)?;
            ks = rope.apply(&ks, ctx.pos_offset, ctx.train)?;
        }
        // Gate g ∈ (0, 1) per head (and per token when dynamic), in f32: q_sem·2g, q_geo·(2 − 2g).
        if let Some(logit) = &self.gate_logit {
            let mut z = logit.to_dtype(DType::F32)?.reshape((1, nh, 1, 1))?;
            if let Some(proj) = &self.gate_proj {
                let dynamic = proj
                    .forward(xs)?
                    .to_dtype(DType::F32)?
                    .transpose(1, 2)?
                    .unsqueeze(3)?; // (b, nh, t, 1)
                z = z.broadcast_add(&dynamic)?;
            }
            let g = candle_nn::ops::sigmoid(&z)?;
            let sem_scale = (g.clone() * 2.0)?.to_dtype(qs.dtype())?;
            let geo_scale = ((g * -2.0)? + 2.0)?.to_dtype(qg.dtype())?;
            qs = qs.broadcast_mul(&sem_scale)?;
            qg = qg.broadcast_mul(&geo_scale)?;
        }
        let s_sem = if sh > 0 { 1.0 / (sh as f64).sqrt() } else { 0.0 };
        let s_geo = if gh > 0 { 1.0 / (gh as f64).sqrt() } else { 0.0 };
        let k_cat = Tensor::cat(&[ks, kg], 3)?;
        // The scaled queries: the fused decode kernel scales per segment itself, so a GPU decode
        // step skips the two multiplications (each a launch).
        let q_scaled = |qs: &Tensor, qg: &Tensor| Tensor::cat(&[(qs * s_sem)?, (qg * s_geo)?], 3);
        if let Some(cache) = ctx.cache.as_deref_mut()
            && let Some(kinds) = cache.quant
        {
            let q_cat = q_scaled(&qs, &qg)?;
            // Quantized cache: K is [k_sem ‖ k_geo] as two segments (geo may use its own kind).
            let store = cache.quant_store(self.slot, || crate::cache::QuantKvSpec {
                batch: b,
                n_kv_heads: nkv,
                k: crate::cache::StreamSpec::segmented(&[
                    (sh, kinds.k),
                    (gh, kinds.k_geo.unwrap_or(kinds.k)),
                ]),
                v: crate::cache::StreamSpec::uniform(vh, kinds.v),
                residual: 0,
                rotate_k: false,
                center_k: kinds.center_k,
                rotate_v: kinds.rotate_v,
            })?;
            store.append(&k_cat, &v)?;
            let null = self.null.as_ref().map(|(k, v)| NullKv { k, v });
            let out = store.attend(&q_cat, null, crate::cache::DecodeOptions::default())?;
            let out = self.o.forward(&out.transpose(1, 2)?.reshape((b, t, nh * vh))?)?;
            ctx.record(TraceKind::Attention, &self.path, &out);
            ctx.finished_slot(self.slot);
            return Ok(out);
        }
        let mut padded = false;
        let (k_cat, v) = match ctx.cache.as_deref_mut() {
            Some(cache) => {
                let (dtype, stored) = (k_cat.dtype(), cache.dtype);
                let slot = cache
                    .plain_slot(self.slot)
                    .map_err(|e| e.context(self.path.clone()))?;
                let (k, v) = slot.append(&k_cat.to_dtype(stored)?, &v.to_dtype(stored)?)?;
                padded = cache.padding_mask(t, k.dim(2)?, xs.device())?.is_some();
                (k.to_dtype(dtype)?, v.to_dtype(dtype)?)
            }
            None => (k_cat, v),
        };
        if !ctx.train && t == 1 && !padded {
            // One decode step on a GPU: the fused kernel reads the decoupled cache once.
            let segments = crate::kernels::KeySegments {
                sem_dim: sh,
                geo_dim: gh,
            };
            let scales = crate::kernels::DecodeScales {
                sem: s_sem as f32,
                geo: s_geo as f32,
            };
            let null = self.null.as_ref().map(|(k, v)| (k, v));
            let q_raw = Tensor::cat(&[&qs, &qg], 3)?;
            if let Some(out) = crate::kernels::decode_attention(&q_raw, &k_cat, &v, segments, scales, null)? {
                let out = self.o.forward(&out.transpose(1, 2)?.reshape((b, t, nh * vh))?)?;
                ctx.record(TraceKind::Attention, &self.path, &out);
                ctx.finished_slot(self.slot);
                return Ok(out);
            }
        }
        let null = self.null.as_ref().map(|(k, v)| NullKv { k, v });
        let q_cat = q_scaled(&qs, &qg)?;
        let opts = AttendOptions {
            causal: self.causal,
            train: ctx.train,
            dropout_p: self.dropout_p,
            rng: ctx.rng.as_deref_mut(),
        };
        let out = grouped_attention(&q_cat, &k_cat, &v, null, opts)?; // (b, nh, t, vh)
        let out = self.o.forward(&out.transpose(1, 2)?.reshape((b, t, nh * vh))?)?;
        ctx.record(TraceKind::Attention, &self.path, &out);
        ctx.finished_slot(self.slot);
        Ok(out)
    }
}
