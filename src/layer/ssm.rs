//! Mamba's selective state-space mixer (`type: SSMLayer`; aliases `ssm`, `mamba`) — Gu & Dao,
//! "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023); the function of HF
//! transformers' `MambaMixer` (its slow path), with its weight names.
//!
//! With `E = expand · d_model` channels, `N = d_state` states per channel and `R = dt_rank`:
//!
//! ```text
//! [x | z]   = in_proj(u)                                  (b, t, 2E)
//! x         = silu(causal_depthwise_conv_{d_conv}(x))     (b, t, E); weight (E, 1, d_conv)
//! [δ | B | C] = x_proj(x)                                 (b, t, R + 2N)
//! dt        = softplus(dt_proj(δ))                        (b, t, E)   (dt_proj has a bias)
//! A         = −exp(A_log)                                 (E, N)
//! h_t       = exp(dt_t·A) ⊙ h_{t−1} + dt_t·B_t·x_t        (b, E, N)   the selective scan
//! y_t       = h_t·C_t + D ⊙ x_t                           (b, t, E)
//! out       = out_proj(y ⊙ silu(z))                       (b, t, d_model)
//! ```
//!
//! Training and uncached forwards run the scan as [`SelectiveScan`] (host loops, hand-written
//! backward); decoding with a cache runs [`scan_reference`] from the cached state and keeps the
//! state after each new position in the layer's cache slot (a [`RecurrentState`]: the last
//! `d_conv − 1` inputs of the convolution and h), so a decode step costs O(1) in the sequence
//! length and equals the full-sequence forward. Left-padded rows are exact: padding positions get
//! a zero convolution input and dt = 0 (so h stays 0).
//!
//! Fresh weights as Mamba's: `A_log[e, n] = ln(n + 1)`, `D = 1`, `dt_proj.bias` the inverse
//! softplus of dt drawn log-uniformly in `[dt_min, dt_max]` (floored at `dt_init_floor`),
//! `dt_proj.weight` uniform in ±`dt_scale/√R` (`dt_init: random`) or that constant, the
//! convolution as PyTorch's `Conv1d` (uniform ±1/√d_conv), the projections N(0, 0.02).
//!
//! [`RecurrentState`]: crate::cache::RecurrentState

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::linear::{Projection, projection};
use super::spec::{Layer, LayerSpec, LayerType, MAX_DIM, SpecProblem, Widths, check_dim};
use crate::model::context::ForwardCtx;
use crate::ops::closed_form::apply3;
use crate::ops::selective_scan::{SelectiveScan, scan_reference};

/// The rank of dt's projection: `auto` (⌈d_model / 16⌉, Mamba's) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtRank {
    #[default]
    Auto,
    Fixed(usize),
}

impl Serialize for DtRank {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Fixed(r) => s.serialize_u64(*r as u64),
        }
    }
}

impl<'de> Deserialize<'de> for DtRank {
    fn deserialize<De: Deserializer<'de>>(d: De) -> std::result::Result<Self, De::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DtRank;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`auto` or a positive integer")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<DtRank, E> {
                usize::try_from(v)
                    .map(DtRank::Fixed)
                    .map_err(|_| E::custom(format!("dt_rank {v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<DtRank, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("expected `auto` or a positive integer, found {v}")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<DtRank, E> {
                if v == "auto" {
                    Ok(DtRank::Auto)
                } else {
                    Err(E::custom(format!(
                        "expected `auto` or a positive integer, found `{v}`"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// How `dt_proj.weight` starts (Mamba's `dt_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DtInit {
    /// Uniform in ±dt_scale/√dt_rank.
    #[default]
    Random,
    /// Every entry dt_scale/√dt_rank.
    Constant,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SsmSpec {
    /// Width of the residual stream.
    pub d_model: usize,
    /// States per channel N. Default: 16.
    #[serde(default = "default_d_state")]
    pub d_state: usize,
    /// Width of the causal depthwise convolution. Default: 4.
    #[serde(default = "default_d_conv")]
    pub d_conv: usize,
    /// Channels per model feature: d_inner = expand · d_model. Default: 2.
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// Rank of dt's projection. Default: `auto` (⌈d_model / 16⌉).
    #[serde(default)]
    pub dt_rank: DtRank,
    /// Smallest initial dt. Default: 0.001.
    #[serde(default = "default_dt_min")]
    pub dt_min: f64,
    /// Largest initial dt. Default: 0.1.
    #[serde(default = "default_dt_max")]
    pub dt_max: f64,
    /// How `dt_proj.weight` starts. Default: random.
    #[serde(default)]
    pub dt_init: DtInit,
    /// Scale of `dt_proj.weight`'s initialisation. Default: 1.
    #[serde(default = "default_dt_scale")]
    pub dt_scale: f64,
    /// Floor of the initial dt. Default: 1e-4.
    #[serde(default = "default_dt_floor")]
    pub dt_init_floor: f64,
    /// Biases on in_proj and out_proj. Default: false.
    #[serde(default)]
    pub bias: bool,
    /// Bias on the convolution. Default: true.
    #[serde(default = "yes")]
    pub conv_bias: bool,
}

fn default_d_state() -> usize {
    16
}
fn default_d_conv() -> usize {
    4
}
fn default_expand() -> usize {
    2
}
fn default_dt_min() -> f64 {
    1e-3
}
fn default_dt_max() -> f64 {
    0.1
}
fn default_dt_scale() -> f64 {
    1.0
}
fn default_dt_floor() -> f64 {
    1e-4
}
fn yes() -> bool {
    true
}

impl SsmSpec {
    /// A spec with every default but `d_model`.
    pub fn new(d_model: usize) -> Self {
        Self {
            d_model,
            d_state: default_d_state(),
            d_conv: default_d_conv(),
            expand: default_expand(),
            dt_rank: DtRank::Auto,
            dt_min: default_dt_min(),
            dt_max: default_dt_max(),
            dt_init: DtInit::Random,
            dt_scale: default_dt_scale(),
            dt_init_floor: default_dt_floor(),
            bias: false,
            conv_bias: true,
        }
    }

    /// Channels E = expand · d_model.
    pub fn d_inner(&self) -> usize {
        self.expand.saturating_mul(self.d_model)
    }

    /// R: `dt_rank`, or ⌈d_model / 16⌉ for `auto`.
    pub fn dt_rank(&self) -> usize {
        match self.dt_rank {
            DtRank::Auto => self.d_model.div_ceil(16),
            DtRank::Fixed(r) => r,
        }
    }
}

impl LayerType for SsmSpec {
    const NAME: &'static str = "SSMLayer";
    const ALIASES: &'static [&'static str] = &["ssm", "mamba"];
}

impl LayerSpec for SsmSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        check_dim(&mut out, "d_model", self.d_model);
        let hint = |out: &mut Vec<SpecProblem>, ok: bool, help: &str| {
            if !ok && let Some(p) = out.last_mut() {
                p.help = Some(help.into());
            }
        };
        let ok = check_dim(&mut out, "d_state", self.d_state);
        hint(
            &mut out,
            ok,
            "the states per channel of the scan; Mamba uses d_state: 16",
        );
        let ok = check_dim(&mut out, "d_conv", self.d_conv);
        hint(
            &mut out,
            ok,
            "the width of the causal convolution; Mamba uses d_conv: 4",
        );
        let ok = check_dim(&mut out, "expand", self.expand);
        hint(&mut out, ok, "d_inner = expand · d_model; Mamba uses expand: 2");
        if self.expand > 0 && self.d_model > 0 && self.expand.saturating_mul(self.d_model) > MAX_DIM {
            out.push(SpecProblem::new(
                "expand",
                format!("expand · d_model = {} exceeds {MAX_DIM}", self.d_inner()),
            ));
        }
        if let DtRank::Fixed(r) = self.dt_rank {
            let ok = check_dim(&mut out, "dt_rank", r);
            hint(&mut out, ok, "write dt_rank: auto for ⌈d_model / 16⌉");
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.dt_min) {
            out.push(
                SpecProblem::new(
                    "dt_min",
                    format!("must be a positive number (got {})", self.dt_min),
                )
                .with_help("Mamba uses dt_min: 0.001"),
            );
        }
        if !(positive(self.dt_max) && self.dt_max > self.dt_min) {
            out.push(
                SpecProblem::new(
                    "dt_max",
                    format!(
                        "must be finite and larger than dt_min = {} (got {})",
                        self.dt_min, self.dt_max
                    ),
                )
                .with_help("initial dts are drawn log-uniformly in [dt_min, dt_max]; Mamba uses dt_max: 0.1"),
            );
        }
        if !positive(self.dt_scale) {
            out.push(SpecProblem::new(
                "dt_scale",
                format!("must be a positive number (got {})", self.dt_scale),
            ));
        }
        if !(self.dt_init_floor.is_finite() && self.dt_init_floor >= 0.0) {
            out.push(SpecProblem::new(
                "dt_init_floor",
                format!("must be finite and non-negative (got {})", self.dt_init_floor),
            ));
        }
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths::preserving("d_model", self.d_model))
    }

    /// in_proj 2Ed (+2E), conv E·d_conv (+E), x_proj E(R+2N), dt_proj RE+E, A_log EN, D E,
    /// out_proj Ed (+d).
    fn params(&self) -> u64 {
        let (d, e, n, r, k) = (
            self.d_model as u64,
            self.d_inner() as u64,
            self.d_state as u64,
            self.dt_rank() as u64,
            self.d_conv as u64,
        );
        let bias = u64::from(self.bias);
        let terms = [
            2u64.saturating_mul(e).saturating_mul(d),
            bias.saturating_mul(2 * e),
            e.saturating_mul(k),
            u64::from(self.conv_bias).saturating_mul(e),
            e.saturating_mul(r.saturating_add(n.saturating_mul(2))),
            r.saturating_mul(e).saturating_add(e),
            e.saturating_mul(n),
            e,
            e.saturating_mul(d),
            bias.saturating_mul(d),
        ];
        terms.iter().fold(0u64, |s, t| s.saturating_add(*t))
    }

    fn describe(&self) -> String {
        format!(
            "d_model={} d_state={} d_conv={} expand={} dt_rank={} d_inner={} state_values_per_row={}",
            self.d_model,
            self.d_state,
            self.d_conv,
            self.expand,
            self.dt_rank(),
            self.d_inner(),
            self.d_inner()
                .saturating_mul(self.d_state.saturating_add(self.d_conv.saturating_sub(1)))
        )
    }

    fn build(&self, vb: VarBuilder, next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        let slot = *next_slot;
        *next_slot += 1;
        Ok(Box::new(Ssm::build(self, vb, slot)?))
    }
}

/// A built SSM mixer.
pub struct Ssm {
    in_proj: Projection,
    /// (E, d_conv): `conv1d.weight` (E, 1, d_conv) without its middle axis.
    conv_w: Tensor,
    conv_b: Option<Tensor>,
    x_proj: Projection,
    dt_proj: Linear,
    a_log: Tensor,
    d: Tensor,
    out_proj: Projection,
    e: usize,
    n: usize,
    r: usize,
    k: usize,
    /// Cache slot of the recurrent state.
    slot: usize,
}

/// softplus(x) = ln(1 + eˣ), stably: max(x, 0) + ln(1 + e^−|x|).
fn softplus(xs: &Tensor) -> Result<Tensor> {
    xs.relu()? + (xs.abs()?.neg()?.exp()? + 1.0)?.log()?
}

impl Ssm {
    /// Weights under `vb` with HF `MambaMixer`'s names; `slot` indexes its recurrent state.
    pub fn build(spec: &SsmSpec, vb: VarBuilder, slot: usize) -> Result<Self> {
        let (d, e, n, r, k) = (
            spec.d_model,
            spec.d_inner(),
            spec.d_state,
            spec.dt_rank(),
            spec.d_conv,
        );
        let in_proj = projection(d, 2 * e, spec.bias, vb.pp("in_proj"))?;
        let bound = 1.0 / (k as f64).sqrt();
        let uniform = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let conv_w = vb
            .pp("conv1d")
            .get_with_hints((e, 1, k), "weight", uniform)?
            .reshape((e, k))?;
        let conv_b = if spec.conv_bias {
            Some(vb.pp("conv1d").get_with_hints(e, "bias", uniform)?)
        } else {
            None
        };
        let x_proj = projection(e, r + 2 * n, false, vb.pp("x_proj"))?;
        let dt_std = spec.dt_scale / (r as f64).sqrt();
        let dt_w_init = match spec.dt_init {
            DtInit::Random => Init::Uniform {
                lo: -dt_std,
                up: dt_std,
            },
            DtInit::Constant => Init::Const(dt_std),
        };
        let dt_vb = vb.pp("dt_proj");
        let dt_w = dt_vb.get_with_hints((e, r), "weight", dt_w_init)?;
        let fresh_bias = !dt_vb.contains_tensor("bias");
        let (lo, up) = (spec.dt_min.ln(), spec.dt_max.ln());
        let dt_b = dt_vb.get_with_hints(e, "bias", Init::Uniform { lo, up })?;
        if fresh_bias {
            // why: Mamba's dt bias is inv_softplus(exp(u)) for u uniform in [ln dt_min, ln dt_max];
            // the var builder draws the (seeded) uniform, this maps it in place.
            let dt = dt_b.to_dtype(DType::F64)?.exp()?.maximum(spec.dt_init_floor)?;
            // inverse softplus: dt + ln(1 − e^−dt)
            let inv = (&dt + (1.0 - dt.neg()?.exp()?)?.log()?)?;
            dt_b.slice_set(&inv.to_dtype(dt_b.dtype())?, 0, 0)?;
        }
        let fresh_a = !vb.contains_tensor("A_log");
        let a_log = vb.get_with_hints((e, n), "A_log", Init::Const(0.0))?;
        if fresh_a {
            // why: S4D-real initialisation, A[e, n] = −(n + 1); Init has no such pattern.
            let row: Vec<f32> = (1..=n).map(|v| (v as f32).ln()).collect();
            let init = Tensor::from_vec(row, (1, n), a_log.device())?
                .to_dtype(a_log.dtype())?
                .repeat((e, 1))?;
            a_log.slice_set(&init, 0, 0)?;
        }
        let d_skip = vb.get_with_hints(e, "D", Init::Const(1.0))?;
        let out_proj = projection(e, d, spec.bias, vb.pp("out_proj"))?;
        Ok(Self {
            in_proj,
            conv_w,
            conv_b,
            x_proj,
            dt_proj: Linear::new(dt_w, Some(dt_b)),
            a_log,
            d: d_skip,
            out_proj,
            e,
            n,
            r,
            k,
            slot,
        })
    }

    /// (b, t, d_model) -> (b, t, d_model); continues from and advances the cached state when
    /// `ctx` has a cache.
    pub fn forward_ctx(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let (e, n, r, k) = (self.e, self.n, self.r, self.k);
        let xz = self.in_proj.forward(xs)?;
        let (x, z) = (xz.narrow(D::Minus1, 0, e)?, xz.narrow(D::Minus1, e, e)?);

        // Left padding (batched generation): (b, t, 1) with 0 at padding positions.
        let pos = ctx.pos_offset;
        let mask = match ctx.cache.as_deref() {
            Some(cache) if cache.left_pad.iter().any(|&p| p > 0) => {
                let m: Vec<f32> = cache
                    .left_pad
                    .iter()
                    .flat_map(|&pad| (0..t).map(move |i| f32::from(u8::from(pos + i >= pad))))
                    .collect();
                Some(Tensor::from_vec(m, (b, t, 1), xs.device())?.to_dtype(xs.dtype())?)
            }
            _ => None,
        };
        let x = match &mask {
            Some(m) => x.broadcast_mul(m)?,
            None => x,
        };

        // The state before this chunk: the last k − 1 convolution inputs and h.
        let (conv_prev, h0) = match ctx.cache.as_deref_mut() {
            Some(cache) => match cache.recurrent_slot(self.slot)?.current() {
                Some(s) => (s[0].clone(), s[1].clone()),
                None => self.zero_state(b, xs)?,
            },
            None => self.zero_state(b, xs)?,
        };

        // Causal depthwise convolution: out_t = Σ_j w[:, j] · xpad_{t+j} over the padded input.
        let xpad = Tensor::cat(&[&conv_prev, &x], 1)?; // (b, k − 1 + t, E)
        let mut conv = xpad
            .narrow(1, 0, t)?
            .broadcast_mul(&self.conv_w.narrow(1, 0, 1)?.squeeze(1)?)?;
        for j in 1..k {
            conv = (conv
                + xpad
                    .narrow(1, j, t)?
                    .broadcast_mul(&self.conv_w.narrow(1, j, 1)?.squeeze(1)?)?)?;
        }
        if let Some(bias) = &self.conv_b {
            conv = conv.broadcast_add(bias)?;
        }
        let xc = candle_nn::ops::silu(&conv)?; // (b, t, E)

        let dbc = self.x_proj.forward(&xc)?; // (b, t, R + 2N)
        let dt = softplus(&self.dt_proj.forward(&dbc.narrow(D::Minus1, 0, r)?)?)?;
        let dt = match &mask {
            Some(m) => dt.broadcast_mul(m)?,
            None => dt,
        };
        let (bm, cm) = (dbc.narrow(D::Minus1, r, n)?, dbc.narrow(D::Minus1, r + n, n)?);
        let a = self.a_log.to_dtype(DType::F32)?.exp()?.neg()?;

        let y = match ctx.cache.as_deref_mut() {
            Some(cache) => {
                let state = cache.recurrent_slot(self.slot)?;
                let keep = t.min(crate::cache::ROLLBACK_WINDOW);
                let (y, hs) = scan_reference(&dt, &xc, &a, &bm, &cm, &h0, keep)?;
                let len = state.len();
                for (j, h) in hs.into_iter().enumerate() {
                    // why: a copy, so that the kept window does not pin the whole prefill input.
                    let pos = t - keep + j + 1;
                    let window = xpad.narrow(1, pos, k - 1)?.copy()?;
                    state.push(len + pos, vec![window, h])?;
                }
                y
            }
            None => {
                let xbc = Tensor::cat(&[&xc, &bm, &cm], D::Minus1)?;
                apply3(&dt, &xbc, &a, SelectiveScan)?
            }
        };
        let y = y.to_dtype(xs.dtype())?.add(&xc.broadcast_mul(&self.d)?)?;
        self.out_proj.forward(&(y * candle_nn::ops::silu(&z)?)?)
    }

    /// A fresh state: (b, k − 1, E) convolution inputs in the activations' dtype, h (b, E, N) in f32.
    fn zero_state(&self, b: usize, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::zeros((b, self.k - 1, self.e), xs.dtype(), xs.device())?,
            Tensor::zeros((b, self.e, self.n), DType::F32, xs.device())?,
        ))
    }
}

impl Layer for Ssm {
    fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.forward_ctx(xs, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvCache;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn small() -> SsmSpec {
        SsmSpec {
            d_state: 4,
            d_conv: 3,
            ..SsmSpec::new(8)
        }
    }

    /// A layer whose projections are large enough (N(0, 0.3²)) that every term matters.
    fn random_ssm(s: &SsmSpec) -> (Ssm, VarMap) {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let ssm = Ssm::build(s, vb, 0).expect("build");
        for (name, var) in map.data().lock().expect("lock").iter() {
            if name.ends_with("proj.weight") && !name.starts_with("dt_proj") {
                let r = Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu).expect("randn");
                var.set(&r).expect("set");
            }
        }
        (ssm, map)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .expect("same shapes")
    }

    #[test]
    fn fresh_weights_follow_mamba() -> Result<()> {
        let s = small();
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        Ssm::build(&s, vb, 0)?;
        let data = map.data().lock().expect("lock");
        let a = data["A_log"].as_tensor().to_vec2::<f32>()?;
        assert_eq!(a.len(), 16);
        assert!(a.iter().all(|row| {
            row.iter()
                .enumerate()
                .all(|(n, v)| (v - ((n + 1) as f32).ln()).abs() < 1e-6)
        }));
        assert!(data["D"].as_tensor().to_vec1::<f32>()?.iter().all(|&v| v == 1.0));
        // softplus(bias) is the initial dt, in [dt_min, dt_max].
        let dt = softplus(data["dt_proj.bias"].as_tensor())?.to_vec1::<f32>()?;
        assert!(dt.iter().all(|&v| (0.00099..=0.1001).contains(&v)), "{dt:?}");
        assert_eq!(data["conv1d.weight"].as_tensor().dims(), [16, 1, 3]);
        assert_eq!(data["x_proj.weight"].as_tensor().dims(), [1 + 8, 16]);
        let total: usize = data.values().map(|v| v.elem_count()).sum();
        assert_eq!(total as u64, s.params());
        Ok(())
    }

    #[test]
    fn cached_decode_token_by_token_equals_the_full_forward() -> Result<()> {
        let s = small();
        let (ssm, _) = random_ssm(&s);
        let xs = Tensor::randn(0f32, 1.0, (2, 9, 8), &Device::Cpu)?;
        let full = ssm.forward_ctx(&xs, &mut ForwardCtx::eval())?;
        let mut cache = KvCache::new(1, DType::F32);
        // A prefill of 4 tokens, then one token at a time.
        let mut outs = vec![ssm.forward_ctx(&xs.narrow(1, 0, 4)?, &mut ForwardCtx::cached(&mut cache, 0))?];
        for i in 4..9 {
            outs.push(ssm.forward_ctx(&xs.narrow(1, i, 1)?, &mut ForwardCtx::cached(&mut cache, i))?);
        }
        assert_eq!(cache.len(), 9);
        let stepped = Tensor::cat(&outs, 1)?;
        let d = max_diff(&full, &stepped);
        assert!(d < 1e-5, "decode differs from the full forward by {d}");

        // Roll back 3 positions and feed them again: the same outputs.
        cache.truncate(6)?;
        let again = ssm.forward_ctx(&xs.narrow(1, 6, 3)?, &mut ForwardCtx::cached(&mut cache, 6))?;
        assert!(max_diff(&again, &full.narrow(1, 6, 3)?) < 1e-5);
        Ok(())
    }

    #[test]
    fn left_padding_does_not_change_a_row() -> Result<()> {
        let s = small();
        let (ssm, _) = random_ssm(&s);
        let xs = Tensor::randn(0f32, 1.0, (1, 5, 8), &Device::Cpu)?;
        let alone = ssm.forward_ctx(&xs, &mut ForwardCtx::eval())?;
        // Row 0 has two padding positions (garbage inputs) before the same five tokens.
        let garbage = Tensor::randn(0f32, 3.0, (1, 2, 8), &Device::Cpu)?;
        let padded = Tensor::cat(&[&garbage, &xs], 1)?;
        let mut cache = KvCache::new(1, DType::F32);
        cache.left_pad = vec![2];
        let ys = ssm.forward_ctx(&padded, &mut ForwardCtx::cached(&mut cache, 0))?;
        let d = max_diff(&ys.narrow(1, 2, 5)?, &alone);
        assert!(d < 1e-5, "padding leaks into the row by {d}");
        Ok(())
    }

    #[test]
    fn gradients_reach_every_parameter() -> Result<()> {
        let s = small();
        let (ssm, map) = random_ssm(&s);
        let xs = Tensor::randn(0f32, 1.0, (2, 6, 8), &Device::Cpu)?;
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let ys = ssm.forward_ctx(&xs, &mut ForwardCtx::train(&mut rng))?;
        let grads = ys.sqr()?.sum_all()?.backward()?;
        for (name, var) in map.data().lock().expect("lock").iter() {
            let g = grads.get(var.as_tensor()).expect("a gradient");
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0 && norm.is_finite(), "{name}: {norm}");
        }
        Ok(())
    }

    #[test]
    fn the_fused_scan_and_the_decode_scan_agree_through_the_layer() -> Result<()> {
        // The uncached forward (SelectiveScan) vs a one-shot cached prefill (scan_reference).
        let s = small();
        let (ssm, _) = random_ssm(&s);
        let xs = Tensor::randn(0f32, 1.0, (3, 40, 8), &Device::Cpu)?;
        let a = ssm.forward_ctx(&xs, &mut ForwardCtx::eval())?;
        let mut cache = KvCache::new(1, DType::F32);
        let b = ssm.forward_ctx(&xs, &mut ForwardCtx::cached(&mut cache, 0))?;
        assert!(max_diff(&a, &b) < 1e-5);
        // Only the window's states are kept.
        let err = cache.truncate(2).expect_err("beyond the window").to_string();
        assert!(err.contains("recurrent state"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_sizes_are_problems_at_their_fields() {
        let fields = |s: SsmSpec| -> Vec<String> { s.problems().into_iter().map(|p| p.field).collect() };
        assert!(fields(SsmSpec::new(64)).is_empty());
        let zero_state = SsmSpec {
            d_state: 0,
            ..SsmSpec::new(64)
        };
        let p = zero_state.problems();
        assert_eq!(p[0].field, "d_state");
        assert!(p[0].help.as_deref().is_some_and(|h| h.contains("d_state: 16")));
        assert_eq!(
            fields(SsmSpec {
                d_conv: 0,
                ..SsmSpec::new(64)
            }),
            ["d_conv"]
        );
        assert_eq!(
            fields(SsmSpec {
                expand: 0,
                ..SsmSpec::new(64)
            }),
            ["expand"]
        );
        assert_eq!(
            fields(SsmSpec {
                dt_rank: DtRank::Fixed(0),
                ..SsmSpec::new(64)
            }),
            ["dt_rank"]
        );
        assert_eq!(
            fields(SsmSpec {
                dt_max: 1e-4,
                ..SsmSpec::new(64)
            }),
            ["dt_max"]
        );
        assert_eq!(
            fields(SsmSpec {
                dt_min: 0.0,
                ..SsmSpec::new(64)
            }),
            ["dt_min"]
        );
    }

    #[test]
    fn dt_rank_reads_auto_or_a_number() {
        let auto: SsmSpec = serde_json::from_str(r#"{"d_model": 40}"#).expect("parse");
        assert_eq!((auto.dt_rank, auto.dt_rank()), (DtRank::Auto, 3));
        let fixed: SsmSpec = serde_json::from_str(r#"{"d_model": 40, "dt_rank": 5}"#).expect("parse");
        assert_eq!(fixed.dt_rank(), 5);
        let err = serde_json::from_str::<SsmSpec>(r#"{"d_model": 40, "dt_rank": "big"}"#).expect_err("bad");
        assert!(err.to_string().contains("`auto` or a positive integer"), "{err}");
        assert_eq!(serde_json::to_value(auto).expect("ser")["dt_rank"], "auto");
    }
}
