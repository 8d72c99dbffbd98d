//! Mamba's selective scan (Gu & Dao 2023, Algorithm 2; HF `MambaMixer.slow_forward`) with a
//! host-side forward and a hand-written backward.
//!
//! For every batch row b, channel e (of the `E = d_inner` channels) and state n (of `N = d_state`):
//!
//! ```text
//! h_t[e, n] = exp(dt_t[e] · A[e, n]) · h_{t−1}[e, n] + dt_t[e] · B_t[n] · x_t[e]     h_{−1} = 0
//! y_t[e]    = Σ_n C_t[n] · h_t[e, n]
//! ```
//!
//! Backward, with `g_t = ∂L/∂y_t[e]` and `γ_t = ∂L/∂h_t[e, n]` accumulated from the end:
//!
//! ```text
//! γ_t      = g_t · C_t[n] + exp(dt_{t+1} A) · γ_{t+1}
//! ∂L/∂C_t[n]  += g_t · h_t            ∂L/∂B_t[n] += γ_t · dt_t · x_t      ∂L/∂x_t += γ_t · dt_t · B_t
//! ∂L/∂dt_t    += γ_t · (A · exp(dt_t A) · h_{t−1} + B_t · x_t)
//! ∂L/∂A[e, n] += γ_t · dt_t · exp(dt_t A) · h_{t−1}
//! ```
//!
//! The decays exp(dt·A) are computed by candle's kernels; the loops run time-major with h as
//! (E, N), so each step streams contiguous rows. The backward recomputes one batch row's states
//! (T·E·N floats) at a time instead of keeping them from the forward; the composed-ops scan
//! ([`scan_reference`]) instead keeps every step's tensors alive for its backward and runs ~6 small
//! ops per time step. Batch rows run in parallel (rayon).
//!
//! Inputs are packed into three tensors because a custom op takes three: `dt` (b, T, E),
//! `xbc = [x | B | C]` (b, T, E + 2N), `A` (E, N); the output is `y` (b, T, E) in `dt`'s dtype,
//! computed in f32 on the host (a GPU input makes a round trip: correct, not fast).

use candle_core::{D, DType, Device, Result, Tensor};
use rayon::prelude::*;

use super::closed_form::OpWithGrad3;

/// The selective scan as an [`OpWithGrad3`] over `(dt, xbc, A)`.
#[derive(Debug, Clone, Copy)]
pub struct SelectiveScan;

/// Shapes of one scan.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    e: usize,
    n: usize,
}

impl Dims {
    fn of(dt: &Tensor, xbc: &Tensor, a: &Tensor) -> Result<Self> {
        let (b, t, e) = dt.dims3()?;
        let (ea, n) = a.dims2()?;
        let (bx, tx, w) = xbc.dims3()?;
        if ea != e || (bx, tx) != (b, t) || w != e + 2 * n {
            candle_core::bail!(
                "selective scan: dt {:?}, xbc {:?}, A {:?} do not fit (want xbc (b, T, E + 2N))",
                dt.dims(),
                xbc.dims(),
                a.dims()
            );
        }
        Ok(Self { b, t, e, n })
    }

    /// Width of one xbc row.
    fn w(&self) -> usize {
        self.e + 2 * self.n
    }
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

fn back(v: Vec<f32>, shape: &[usize], like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// One batch row's inputs: dt (T·E), xbc (T·W), decay = exp(dt·A) (T·E·N).
struct Row<'a> {
    dt: &'a [f32],
    xbc: &'a [f32],
    decay: &'a [f32],
}

impl Row<'_> {
    /// (dt_t, x_t, B_t, C_t, decay_t) at time t.
    fn at(&self, d: Dims, t: usize) -> (&[f32], &[f32], &[f32], &[f32], &[f32]) {
        let (e, n, w) = (d.e, d.n, d.w());
        let row = &self.xbc[t * w..(t + 1) * w];
        let (x, rest) = row.split_at(e);
        let (bm, cm) = rest.split_at(n);
        (
            &self.dt[t * e..(t + 1) * e],
            x,
            bm,
            cm,
            &self.decay[t * e * n..(t + 1) * e * n],
        )
    }
}

/// Run the scan of one batch row: y (T·E); with `states`, every h_t (T·E·N) too.
fn forward_row(d: Dims, r: &Row, y: &mut [f32], mut states: Option<&mut [f32]>) {
    let (e, n) = (d.e, d.n);
    // why: time-major with h as (E, N), so every step streams contiguous rows (no strided reads).
    let mut h = vec![0f32; e * n];
    for t in 0..d.t {
        let (dt, x, bm, cm, decay) = r.at(d, t);
        let yt = &mut y[t * e..(t + 1) * e];
        for ((((hh, dd), &dtv), &xv), yv) in h
            .chunks_exact_mut(n)
            .zip(decay.chunks_exact(n))
            .zip(dt)
            .zip(x)
            .zip(yt)
        {
            let s = dtv * xv;
            let mut acc = 0f32;
            for (((hk, &dk), &bk), &ck) in hh.iter_mut().zip(dd).zip(bm).zip(cm) {
                *hk = dk * *hk + s * bk;
                acc += ck * *hk;
            }
            *yv = acc;
        }
        if let Some(states) = states.as_deref_mut() {
            states[t * e * n..(t + 1) * e * n].copy_from_slice(&h);
        }
    }
}

/// Gradients of one batch row: (d dt (T·E), d xbc (T·W), its share of d A (E·N)).
fn backward_row(d: Dims, r: &Row, a: &[f32], gy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (e, n, w) = (d.e, d.n, d.w());
    let (mut ddt, mut dxbc, mut da) = (vec![0f32; d.t * e], vec![0f32; d.t * w], vec![0f32; e * n]);
    let mut hs = vec![0f32; d.t * e * n];
    let mut y = vec![0f32; d.t * e];
    forward_row(d, r, &mut y, Some(&mut hs));
    let zeros = vec![0f32; e * n];
    let mut gamma = vec![0f32; e * n];
    for t in (0..d.t).rev() {
        let (dt, x, bm, cm, decay) = r.at(d, t);
        let h = &hs[t * e * n..(t + 1) * e * n];
        let prev = if t > 0 {
            &hs[(t - 1) * e * n..t * e * n]
        } else {
            &zeros[..]
        };
        let g_row = &gy[t * e..(t + 1) * e];
        let (g_dt, rest) = (&mut ddt[t * e..(t + 1) * e], &mut dxbc[t * w..(t + 1) * w]);
        let (g_x, rest) = rest.split_at_mut(e);
        let (g_b, g_c) = rest.split_at_mut(n);
        let rows = gamma
            .chunks_exact_mut(n)
            .zip(da.chunks_exact_mut(n))
            .zip(a.chunks_exact(n))
            .zip(decay.chunks_exact(n))
            .zip(h.chunks_exact(n).zip(prev.chunks_exact(n)));
        for (ei, ((((gam, gda), ak), dk), (hk, pk))) in rows.enumerate() {
            let (g, dtv, xv) = (g_row[ei], dt[ei], x[ei]);
            let (mut gd, mut gx) = (0f32, 0f32);
            for k in 0..n {
                let gm = gam[k] + g * cm[k];
                g_c[k] += g * hk[k];
                g_b[k] += gm * dtv * xv;
                gx += gm * dtv * bm[k];
                let g_decay = gm * pk[k] * dk[k];
                gd += g_decay * ak[k] + gm * bm[k] * xv;
                gda[k] += g_decay * dtv;
                gam[k] = gm * dk[k];
            }
            g_dt[ei] = gd;
            g_x[ei] = gx;
        }
    }
    (ddt, dxbc, da)
}

/// exp(dt·A) for every (b, t, e, n), by candle's (optimised) kernels, on the host.
fn decay(dt: &Tensor, a: &Tensor) -> Result<Vec<f32>> {
    let dt = dt.to_dtype(DType::F32)?.unsqueeze(3)?;
    let a = a.to_dtype(DType::F32)?.unsqueeze(0)?.unsqueeze(0)?;
    host(&dt.broadcast_mul(&a)?.exp()?)
}

impl OpWithGrad3 for SelectiveScan {
    fn name(&self) -> &'static str {
        "selective-scan"
    }

    fn forward(&self, dt: &Tensor, xbc: &Tensor, a: &Tensor) -> Result<Tensor> {
        let d = Dims::of(dt, xbc, a)?;
        let (dt_h, xbc_h, dec) = (host(dt)?, host(xbc)?, decay(dt, a)?);
        let (te, tw, ten) = (d.t * d.e, d.t * d.w(), d.t * d.e * d.n);
        let mut y = vec![0f32; d.b * te];
        if te > 0 {
            y.par_chunks_mut(te).enumerate().for_each(|(bi, y)| {
                let row = Row {
                    dt: &dt_h[bi * te..(bi + 1) * te],
                    xbc: &xbc_h[bi * tw..(bi + 1) * tw],
                    decay: &dec[bi * ten..(bi + 1) * ten],
                };
                forward_row(d, &row, y, None);
            });
        }
        back(y, &[d.b, d.t, d.e], dt)
    }

    fn backward(
        &self,
        dt: &Tensor,
        xbc: &Tensor,
        a: &Tensor,
        _ys: &Tensor,
        grad: &Tensor,
    ) -> Result<[Tensor; 3]> {
        let d = Dims::of(dt, xbc, a)?;
        let (dt_h, xbc_h, a_h, gy) = (host(dt)?, host(xbc)?, host(a)?, host(grad)?);
        let dec = decay(dt, a)?;
        let (te, tw, ten) = (d.t * d.e, d.t * d.w(), d.t * d.e * d.n);
        let rows: Vec<_> = (0..d.b)
            .into_par_iter()
            .map(|bi| {
                let row = Row {
                    dt: &dt_h[bi * te..(bi + 1) * te],
                    xbc: &xbc_h[bi * tw..(bi + 1) * tw],
                    decay: &dec[bi * ten..(bi + 1) * ten],
                };
                backward_row(d, &row, &a_h, &gy[bi * te..(bi + 1) * te])
            })
            .collect();
        let (mut ddt, mut dxbc, mut da) = (
            Vec::with_capacity(d.b * te),
            Vec::with_capacity(d.b * tw),
            vec![0f32; d.e * d.n],
        );
        for (r_dt, r_xbc, r_a) in rows {
            ddt.extend(r_dt);
            dxbc.extend(r_xbc);
            da.iter_mut().zip(r_a).for_each(|(s, v)| *s += v);
        }
        Ok([
            back(ddt, &[d.b, d.t, d.e], dt)?,
            back(dxbc, &[d.b, d.t, d.w()], xbc)?,
            back(da, &[d.e, d.n], a)?,
        ])
    }

    fn reference(&self, dt: &Tensor, xbc: &Tensor, a: &Tensor) -> Result<Tensor> {
        let d = Dims::of(dt, xbc, a)?;
        let x = xbc.narrow(D::Minus1, 0, d.e)?;
        let bm = xbc.narrow(D::Minus1, d.e, d.n)?;
        let cm = xbc.narrow(D::Minus1, d.e + d.n, d.n)?;
        let h0 = Tensor::zeros((d.b, d.e, d.n), DType::F32, dt.device())?;
        let (y, _) = scan_reference(dt, &x, a, &bm, &cm, &h0, 0)?;
        y.to_dtype(dt.dtype())
    }
}

/// The scan from differentiable candle ops, one time step at a time, from the state `h0`
/// (b, E, N): the oracle of [`SelectiveScan`] and the decode path (which needs the states).
///
/// dt, x (b, T, E); A (E, N); B, C (b, T, N). Returns y (b, T, E) in f32 and the states after the
/// last `keep` positions, oldest first (each (b, E, N)), which a recurrent cache keeps for rollback.
pub fn scan_reference(
    dt: &Tensor,
    x: &Tensor,
    a: &Tensor,
    bm: &Tensor,
    cm: &Tensor,
    h0: &Tensor,
    keep: usize,
) -> Result<(Tensor, Vec<Tensor>)> {
    let f = |t: &Tensor| t.to_dtype(DType::F32);
    let (dt, x, a, bm, cm) = (f(dt)?, f(x)?, f(a)?, f(bm)?, f(cm)?);
    let (_, t_len, _) = dt.dims3()?;
    let dt4 = dt.unsqueeze(3)?; // (b, T, E, 1)
    let decay = dt4.broadcast_mul(&a.unsqueeze(0)?.unsqueeze(0)?)?.exp()?; // (b, T, E, N)
    let input = dt4
        .broadcast_mul(&bm.unsqueeze(2)?)?
        .broadcast_mul(&x.unsqueeze(3)?)?; // (b, T, E, N)
    let mut h = f(h0)?;
    let (mut ys, mut states) = (Vec::with_capacity(t_len), Vec::new());
    for t in 0..t_len {
        h = ((decay.narrow(1, t, 1)?.squeeze(1)? * &h)? + input.narrow(1, t, 1)?.squeeze(1)?)?;
        // y_t[e] = Σ_n h[e, n] · C_t[n]: (b, E, N) · (b, N, 1) -> (b, E, 1)
        let c = cm.narrow(1, t, 1)?.squeeze(1)?.unsqueeze(2)?;
        ys.push(h.matmul(&c)?.squeeze(2)?);
        if t + keep >= t_len {
            states.push(h.clone());
        }
    }
    Ok((Tensor::stack(&ys, 1)?, states))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::closed_form::{apply3, check};
    use candle_core::Var;

    /// Random inputs in the ranges a Mamba layer produces: dt > 0 (softplus), A < 0.
    fn inputs(b: usize, t: usize, e: usize, n: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        let dt = ((Tensor::rand(0f32, 1.0, (b, t, e), &dev)? * 0.5)? + 0.01)?;
        let xbc = Tensor::randn(0f32, 1.0, (b, t, e + 2 * n), &dev)?;
        let a = Tensor::rand(-2f32, -0.05, (e, n), &dev)?;
        Ok((dt, xbc, a))
    }

    #[test]
    fn forward_and_backward_equal_the_composed_ops_scan() -> Result<()> {
        let (dt, xbc, a) = inputs(3, 11, 5, 4)?;
        let (vdt, vxbc, va) = (
            Var::from_tensor(&dt)?,
            Var::from_tensor(&xbc)?,
            Var::from_tensor(&a)?,
        );
        let ours = apply3(vdt.as_tensor(), vxbc.as_tensor(), va.as_tensor(), SelectiveScan)?;
        let want = SelectiveScan.reference(vdt.as_tensor(), vxbc.as_tensor(), va.as_tensor())?;
        let fwd = check::max_abs_diff(&ours, &want);
        assert!(fwd < 1e-5, "forward differs by {fwd}");
        let upstream = Tensor::randn(0f32, 1.0, ours.shape(), &Device::Cpu)?;
        let g1 = (ours * &upstream)?.sum_all()?.backward()?;
        let g2 = (want * &upstream)?.sum_all()?.backward()?;
        for (name, v) in [("dt", &vdt), ("xbc", &vxbc), ("A", &va)] {
            let (x, y) = (
                g1.get(v.as_tensor()).expect("ours"),
                g2.get(v.as_tensor()).expect("reference"),
            );
            let scale = y.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let diff = check::max_abs_diff(x, y);
            assert!(scale > 1e-2, "{name}: gradient {scale} tests nothing");
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{name}: gradient differs by {diff} (scale {scale})"
            );
        }
        Ok(())
    }

    #[test]
    fn the_reference_keeps_the_last_states_and_continues_from_one() -> Result<()> {
        let (dt, xbc, a) = inputs(2, 9, 3, 4)?;
        let (e, n) = (3, 4);
        let x = xbc.narrow(2, 0, e)?;
        let bm = xbc.narrow(2, e, n)?;
        let cm = xbc.narrow(2, e + n, n)?;
        let h0 = Tensor::zeros((2, e, n), DType::F32, &Device::Cpu)?;
        let (y, states) = scan_reference(&dt, &x, &a, &bm, &cm, &h0, 3)?;
        assert_eq!(states.len(), 3);
        // Scanning the first 6 positions, then the last 3 from the state after position 5, gives
        // the same outputs.
        let part = |t: &Tensor, s: usize, l: usize| t.narrow(1, s, l);
        let (_, mid) = scan_reference(
            &part(&dt, 0, 6)?,
            &part(&x, 0, 6)?,
            &a,
            &part(&bm, 0, 6)?,
            &part(&cm, 0, 6)?,
            &h0,
            1,
        )?;
        let (tail, last) = scan_reference(
            &part(&dt, 6, 3)?,
            &part(&x, 6, 3)?,
            &a,
            &part(&bm, 6, 3)?,
            &part(&cm, 6, 3)?,
            &mid[0],
            1,
        )?;
        assert!(check::max_abs_diff(&tail, &y.narrow(1, 6, 3)?) < 1e-6);
        assert!(check::max_abs_diff(&last[0], &states[2]) < 1e-6);
        Ok(())
    }
}
