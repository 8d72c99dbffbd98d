//! Grouped scaled-dot-product attention shared by the standard/GQA and decoupled layers.
//!
//! The `g = n_heads / n_kv_heads` query heads of a KV group are folded into the time axis and
//! multiplied against their shared K/V (no `repeat_kv` copy). An optional "null" key/value per KV
//! head is prepended and always visible (a token also sees itself and everything before it).
//! Shapes: q (b, n_heads, t, dq) pre-scaled; k (b, n_kv, kt, dq); v (b, n_kv, kt, dv)
//! -> (b, n_heads, t, dv).

use candle_core::{D, DType, Result, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::layer::dropout::apply_dropout;

/// A learned always-visible key/value per KV head: k (n_kv, dq), v (n_kv, dv).
pub struct NullKv<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
}

pub struct AttendOptions<'a> {
    pub causal: bool,
    pub train: bool,
    pub dropout_p: f64,
    pub rng: Option<&'a mut ChaCha8Rng>,
}

pub fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    null: Option<NullKv>,
    opts: AttendOptions,
) -> Result<Tensor> {
    let (b, nh, t, dq) = q.dims4()?;
    let (_, nkv, kt, _) = k.dims4()?;
    let dv = v.dim(3)?;
    if nkv == 0 || nh % nkv != 0 {
        candle_core::bail!("{nh} query heads cannot share {nkv} KV heads");
    }
    let g = nh / nkv;
    let (k, v, n_null) = match null {
        Some(n) => {
            let k0 =
                n.k.reshape((1, nkv, 1, dq))?
                    .broadcast_as((b, nkv, 1, dq))?
                    .to_dtype(k.dtype())?;
            let v0 =
                n.v.reshape((1, nkv, 1, dv))?
                    .broadcast_as((b, nkv, 1, dv))?
                    .to_dtype(v.dtype())?;
            (Tensor::cat(&[&k0, k], 2)?, Tensor::cat(&[&v0, v], 2)?, 1)
        }
        None => (k.clone(), v.clone(), 0),
    };
    let q = q.contiguous()?.reshape((b, nkv, g * t, dq))?;
    if opts.train && opts.dropout_p == 0.0 {
        return recomputing_attention(&q, &k, &v, opts.causal, g, t, n_null)?.reshape((b, nh, t, dv));
    }
    let scores = q.matmul(&k.contiguous()?.t()?)?; // (b, nkv, g·t, n_null + kt)
    let scores = if opts.causal && t > 1 {
        let mask = cached_causal_mask(t, kt, n_null, q.device(), scores.dtype())?;
        scores
            .reshape((b, nkv, g, t, n_null + kt))?
            .broadcast_add(&mask)?
            .reshape((b, nkv, g * t, n_null + kt))?
    } else {
        scores
    };
    let scores = scores.to_dtype(DType::F32)?;
    let probs = if opts.train {
        super::softmax::softmax_last_dim(&scores)?
    } else {
        candle_nn::ops::softmax_last_dim(&scores)?
    }
    .to_dtype(v.dtype())?;
    let probs = apply_dropout(&probs, opts.dropout_p, opts.train, opts.rng)?;
    probs.matmul(&v.contiguous()?)?.reshape((b, nh, t, dv))
}

/// [`RecomputingAttention`] of q (b, nkv, g·t, dq) pre-scaled over k, v whose first `n_null`
/// columns are always visible, under a causal mask when `causal` (and t > 1).
pub fn recomputing_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    g: usize,
    t: usize,
    n_null: usize,
) -> Result<Tensor> {
    let kt = k.dim(2)? - n_null;
    let mask = (causal && t > 1)
        .then(|| cached_causal_mask(t, kt, n_null, q.device(), q.dtype()))
        .transpose()?;
    super::closed_form::apply3(q, k, v, RecomputingAttention::new(mask, g, t))
}

/// Training attention as one op: softmax(q·kᵀ + mask)·v whose backward recomputes the
/// probabilities from q and k (as flash attention does) instead of keeping the (g·t, kt) scores,
/// their f32 copy and the probabilities of every layer alive until backward; and one graph node
/// instead of ~10, each of which candle's backward would zero-fill and add into.
///
/// Shapes: q (b, nkv, g·t, dq) pre-scaled, with the g query heads of a KV group folded into the
/// time axis; k (b, nkv, kk, dq); v (b, nkv, kk, dv); `mask` (t, kk) additive → (b, nkv, g·t, dv).
/// Softmax in f32, the products in the inputs' dtype (as the unfused path). With
/// P = softmax(S), dO the output's gradient: dV = Pᵀ·dO, dP = dO·Vᵀ,
/// dS = P ⊙ (dP − Σ dP ⊙ P), dQ = dS·K, dK = dSᵀ·Q.
///
/// On CUDA (bf16/f16/f32, head dims 16–128, [`crate::kernels::set_fused_training`] on) forward and
/// backward run the flash-attention kernels of [`crate::kernels::flash_attention`] instead, which
/// never build the (g·t, kk) scores; elsewhere the candle ops below.
#[derive(Clone)]
pub struct RecomputingAttention {
    /// (t, kk) additive mask in q's dtype, shared by the g heads of a group; `None`: no mask.
    /// The fused kernel only asks whether there is one: it is the causal mask of [`causal_mask`].
    pub mask: Option<Tensor>,
    pub g: usize,
    pub t: usize,
    /// The fused forward's per-row logsumexp (b, nkv, g·t) f32, kept for its backward; `None`
    /// when the candle ops ran. why: the `OpWithGrad3` backward sees only the inputs, the output
    /// and its gradient, and recomputing L would be a third pass over q·kᵀ; a slot in the op (one
    /// op per call, dropped with the graph) costs 4 bytes a query row and no trait change.
    lse: std::sync::Arc<std::sync::Mutex<Option<Tensor>>>,
}

impl RecomputingAttention {
    /// An op for one call (each call's forward fills its own logsumexp slot).
    pub fn new(mask: Option<Tensor>, g: usize, t: usize) -> Self {
        Self {
            mask,
            g,
            t,
            lse: Default::default(),
        }
    }

    fn saved_lse(&self) -> Result<Option<Tensor>> {
        self.lse
            .lock()
            .map(|slot| slot.clone())
            .map_err(|_| candle_core::Error::Msg("attention logsumexp slot poisoned".into()))
    }

    /// q·kᵀ + mask: (b, nkv, g·t, kk) in q's dtype.
    fn scores(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        let scores = q.matmul(&k.t()?)?;
        match &self.mask {
            Some(mask) => {
                let (b, nkv, gt, kk) = scores.dims4()?;
                scores
                    .reshape((b, nkv, self.g, self.t, kk))?
                    .broadcast_add(mask)?
                    .reshape((b, nkv, gt, kk))
            }
            None => Ok(scores),
        }
    }

    /// softmax(q·kᵀ + mask) in f32: (b, nkv, g·t, kk).
    fn probs(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax_last_dim(&self.scores(q, k)?.to_dtype(DType::F32)?)
    }
}

impl super::closed_form::OpWithGrad3 for RecomputingAttention {
    fn name(&self) -> &'static str {
        "recomputing-attention"
    }

    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let causal = self.mask.is_some();
        if let Some((out, lse)) = crate::kernels::flash_attention::forward(q, k, v, self.g, self.t, causal)? {
            *self
                .lse
                .lock()
                .map_err(|_| candle_core::Error::Msg("attention logsumexp slot poisoned".into()))? =
                Some(lse);
            return Ok(out);
        }
        self.probs(q, k)?.to_dtype(v.dtype())?.matmul(v)
    }

    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<[Tensor; 3]> {
        // The fused backward exactly where the fused forward ran (the switch may have moved since).
        if let Some(lse) = self.saved_lse()? {
            let causal = self.mask.is_some();
            return crate::kernels::flash_attention::backward(
                q, k, v, out, grad, &lse, self.g, self.t, causal,
            );
        }
        let p = self.probs(q, k)?;
        let grad = grad.contiguous()?;
        let dv = p.to_dtype(v.dtype())?.t()?.matmul(&grad)?;
        let dp = grad.matmul(&v.t()?)?.to_dtype(DType::F32)?;
        let dot = (&dp * &p)?.sum_keepdim(D::Minus1)?;
        let ds = (p * dp.broadcast_sub(&dot)?)?.to_dtype(q.dtype())?;
        let dq = ds.matmul(k)?;
        let dk = ds.t()?.matmul(q)?;
        Ok([dq, dk, dv])
    }

    fn reference(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(&self.scores(q, k)?.to_dtype(DType::F32)?, D::Minus1)?
            .to_dtype(v.dtype())?
            .matmul(v)
    }
}

/// [`causal_mask`] in `dtype` on `device`, kept for reuse: every layer of a forward asks for the
/// same one, and building it means a host loop, a host-to-device copy and a conversion each time.
/// Masks over 4M entries (16 MB in f32) are built per call instead of held.
pub fn cached_causal_mask(
    t: usize,
    kt: usize,
    n_null: usize,
    device: &candle_core::Device,
    dtype: DType,
) -> Result<Tensor> {
    type Key = (usize, usize, usize, candle_core::DeviceLocation, DType);
    static CACHE: std::sync::Mutex<Vec<(Key, Tensor)>> = std::sync::Mutex::new(Vec::new());
    const MAX_ENTRIES: usize = 8;
    const MAX_ELEMENTS: usize = 1 << 22;
    let key = (t, kt, n_null, device.location(), dtype);
    if let Some((_, m)) = CACHE
        .lock()
        .map_err(|_| candle_core::Error::Msg("mask cache poisoned".into()))?
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(m.clone());
    }
    let mask = causal_mask(t, kt, n_null, device)?.to_dtype(dtype)?;
    if t * (n_null + kt) <= MAX_ELEMENTS {
        let mut cache = CACHE
            .lock()
            .map_err(|_| candle_core::Error::Msg("mask cache poisoned".into()))?;
        if cache.len() >= MAX_ENTRIES {
            cache.remove(0);
        }
        cache.push((key, mask.clone()));
    }
    Ok(mask)
}

/// (t, n_null + kt) additive mask: the null columns are always visible; query i (absolute
/// position kt − t + i) sees keys j ≤ its own position, itself included.
pub fn causal_mask(t: usize, kt: usize, n_null: usize, device: &candle_core::Device) -> Result<Tensor> {
    let offset = kt - t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..n_null + kt).map(move |j| {
                if j < n_null || j - n_null <= i + offset {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, n_null + kt), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn recomputing_attention_matches_the_composite_forward_and_backward() -> Result<()> {
        use crate::ops::closed_form::OpWithGrad3;
        use candle_core::Var;
        let dev = Device::Cpu;
        // A KV group of 3 query heads, queries that start after the first keys, one null column.
        let (b, nkv, g, t, kt, n_null, dq, dv) = (2, 2, 3, 4, 6, 1, 8, 5);
        let kk = n_null + kt;
        for masked in [true, false] {
            let mask = masked.then(|| causal_mask(t, kt, n_null, &dev)).transpose()?;
            let op = RecomputingAttention::new(mask, g, t);
            let q = Var::from_tensor(&Tensor::randn(0f32, 0.7, (b, nkv, g * t, dq), &dev)?)?;
            let k = Var::from_tensor(&Tensor::randn(0f32, 0.7, (b, nkv, kk, dq), &dev)?)?;
            let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nkv, kk, dv), &dev)?)?;
            let up = Tensor::randn(0f32, 1.0, (b, nkv, g * t, dv), &dev)?;
            let ours =
                crate::ops::closed_form::apply3(q.as_tensor(), k.as_tensor(), v.as_tensor(), op.clone())?;
            let reference = op.reference(q.as_tensor(), k.as_tensor(), v.as_tensor())?;
            let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
                (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
            };
            assert!(diff(&ours, &reference)? < 1e-5, "masked={masked}: forward");
            let g_ours = (ours * &up)?.sum_all()?.backward()?;
            let g_ref = (reference * &up)?.sum_all()?.backward()?;
            for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
                let (a, r) = (
                    g_ours.get(var.as_tensor()).expect("our gradient"),
                    g_ref.get(var.as_tensor()).expect("reference gradient"),
                );
                let scale = r.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(scale > 1e-2, "masked={masked}: d{name} of {scale} tests nothing");
                let d = diff(a, r)?;
                assert!(
                    d < 1e-5 * scale.max(1.0),
                    "masked={masked}: d{name} differs by {d}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn training_and_inference_attention_agree() -> Result<()> {
        let dev = Device::Cpu;
        let (b, nh, nkv, t, dq, dv) = (2, 4, 2, 5, 8, 6);
        let q = Tensor::randn(0f32, 0.5, (b, nh, t, dq), &dev)?;
        let k = Tensor::randn(0f32, 0.5, (b, nkv, t, dq), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, nkv, t, dv), &dev)?;
        let (nk, nv) = (
            Tensor::randn(0f32, 0.5, (nkv, dq), &dev)?,
            Tensor::randn(0f32, 1.0, (nkv, dv), &dev)?,
        );
        let run = |train: bool| {
            grouped_attention(
                &q,
                &k,
                &v,
                Some(NullKv { k: &nk, v: &nv }),
                AttendOptions {
                    causal: true,
                    train,
                    dropout_p: 0.0,
                    rng: None,
                },
            )
        };
        let d = (run(true)? - run(false)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "{d}");
        Ok(())
    }

    #[test]
    fn cached_masks_equal_fresh_ones_for_every_shape_and_dtype() -> Result<()> {
        let dev = Device::Cpu;
        // Twice over, so the second round is served from the cache; more shapes than it holds.
        for _ in 0..2 {
            for (t, kt, n_null) in [
                (3, 3, 0),
                (3, 7, 0),
                (5, 5, 1),
                (2, 9, 1),
                (4, 4, 0),
                (1, 6, 0),
                (6, 6, 0),
                (7, 9, 0),
                (8, 8, 1),
                (9, 9, 0),
            ] {
                for dtype in [DType::F32, DType::BF16] {
                    let want = causal_mask(t, kt, n_null, &dev)?;
                    let got = cached_causal_mask(t, kt, n_null, &dev, dtype)?;
                    assert_eq!(got.dtype(), dtype);
                    assert_eq!(got.dims(), want.dims());
                    let (g, w): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
                        (got.to_dtype(DType::F32)?.to_vec2()?, want.to_vec2()?);
                    assert_eq!(g, w, "t={t} kt={kt} null={n_null} {dtype:?}");
                }
            }
        }
        Ok(())
    }
}
