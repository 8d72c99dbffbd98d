//! Grouped scaled-dot-product attention shared by the standard/GQA and decoupled layers.
//!
//! The `g = n_heads / n_kv_heads` query heads of a KV group are folded into the time axis and
//! multiplied against their shared K/V (no `repeat_kv` copy). An optional "null" key/value per KV
//! head is prepended and always visible (a token also sees itself and everything before it).
//! Shapes: q (b, n_heads, t, dq) pre-scaled; k (b, n_kv, kt, dq); v (b, n_kv, kt, dv)
//! -> (b, n_heads, t, dv).

use candle_core::{DType, Result, Tensor};
use rand_chacha::ChaCha8Rng;

use super::dropout::apply_dropout;

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
