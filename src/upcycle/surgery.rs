//! Head-aligned, GQA-aware surgery from a teacher's attention (Llama, HF half-split RoPE) into a
//! decoupled (DBA) student layer. See `docs/upcycle.md` and the team's derivation
//! (`shared/reference/surgery.md`).
//!
//! Per KV group g of the teacher (head dim d_h, p = d_h/2 RoPE pairs):
//! - geometric path: the geo_hd/2 pairs that carry the most of the q·k score (Σ over the group's
//!   query heads of ‖q rows‖·‖k rows‖, under the input covariance Σ) are copied exactly, with their
//!   own frequencies (a per-KV-head table), q scaled by √geo_hd/√d_h so s_geo reproduces 1/√d_h;
//! - semantic path: the top-sem_hd principal directions A_g of the group's keys on the remaining
//!   dims R (eigenvectors of W_k[R] Σ W_k[R]ᵀ): k_sem = A_g W_k[R], q_sem,h = √sem_hd/√d_h · A_g W_q,h[R];
//! - value bottleneck: the top-v_hd principal directions B_g of the group's values: v = B_g W_v,g,
//!   and each head's output columns W_o[:, h] B_gᵀ.
//! Σ = I is data-free; Σ = XᵀX/n from calibration inputs is activation-aware. With geo_hd = d_h
//! and v_hd = d_h the student computes exactly the teacher's attention.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use crate::layer::AttentionSpec;
use crate::layer::decoupled::{DecoupledDims, GEO_INV_FREQ};

/// How DBA projections are initialised from the teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbaInit {
    /// Head-aligned pair selection + per-group principal bases (this module). The default.
    #[default]
    Aligned,
    /// The original caramba's "version B": independent SVDs of Q and K (rows diag(S)·Vh split
    /// into sem then geo), V/O copied by truncation. Kept for comparison.
    Svd,
    /// Q/K keep the student's random init; V/O copied by truncation (the original's `random`).
    Random,
    /// Nothing copied: every attention projection keeps the student's fresh init.
    Fresh,
}

#[derive(Debug, thiserror::Error)]
pub enum SurgeryError {
    #[error("teacher and student attention do not fit: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// A teacher attention layer's weights, f32 on any device (HF Llama layout).
pub struct TeacherAttention {
    /// (n_heads · head_dim, d_model)
    pub wq: Tensor,
    /// (n_kv_heads · head_dim, d_model)
    pub wk: Tensor,
    /// (n_kv_heads · head_dim, d_model)
    pub wv: Tensor,
    /// (d_model, n_heads · head_dim)
    pub wo: Tensor,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// The teacher's RoPE inverse frequencies (head_dim/2), scaling already applied.
    pub inv_freq: Vec<f64>,
}

type Mat = DMatrix<f64>;

fn to_mat(t: &Tensor) -> Result<Mat, SurgeryError> {
    let (r, c) = t.dims2()?;
    let v: Vec<f32> = t
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok(Mat::from_row_iterator(r, c, v.into_iter().map(f64::from)))
}

fn to_tensor(m: &Mat) -> Result<Tensor, SurgeryError> {
    let data: Vec<f32> = (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)] as f32))
        .collect();
    Ok(Tensor::from_vec(data, (m.nrows(), m.ncols()), &Device::Cpu)?)
}

fn rows(m: &Mat, idx: &[usize]) -> Mat {
    Mat::from_fn(idx.len(), m.ncols(), |i, j| m[(idx[i], j)])
}

/// Top-`r` eigenvectors (as rows, r × n) of the symmetric matrix `m`, largest eigenvalue first;
/// rows beyond rank(m) or n are zero.
fn top_directions(m: &Mat, r: usize) -> Mat {
    let n = m.nrows();
    let mut out = Mat::zeros(r, n);
    if n == 0 {
        return out;
    }
    let eig = SymmetricEigen::new(m.clone());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    for (k, &i) in order.iter().take(r.min(n)).enumerate() {
        for j in 0..n {
            out[(k, j)] = eig.eigenvectors[(j, i)];
        }
    }
    out
}

/// Student DBA weights (names relative to the layer) from a teacher layer. `calibration`: inputs
/// of the layer (n, d_model) for the activation-aware variant; `None` is data-free.
pub fn surgery(
    teacher: &TeacherAttention,
    student: &AttentionSpec,
    init: DbaInit,
    calibration: Option<&Tensor>,
) -> Result<HashMap<String, Tensor>, SurgeryError> {
    let dims = DecoupledDims::of(student);
    let (h, g, dh) = (teacher.n_heads, teacher.n_kv_heads, teacher.head_dim);
    let d = teacher.wq.dim(1)?;
    let mismatch = |m: String| Err(SurgeryError::Mismatch(m));
    if student.d_model != d {
        return mismatch(format!("student d_model {} vs teacher {d}", student.d_model));
    }
    if dims.n_heads != h || dims.n_kv_heads != g {
        return mismatch(format!(
            "student has {}/{} query/KV heads, teacher {h}/{g}: surgery is head-aligned",
            dims.n_heads, dims.n_kv_heads
        ));
    }
    let (sh, gh, vh) = (dims.sem_head_dim, dims.geo_head_dim, dims.v_head_dim);
    if gh > dh || vh > dh || gh % 2 != 0 {
        return mismatch(format!(
            "geo head dim {gh} (even, ≤ {dh}) and v head dim {vh} (≤ {dh})"
        ));
    }
    if student.decoupled().is_some_and(|d| d.tie_qk) && matches!(init, DbaInit::Aligned | DbaInit::Svd) {
        return mismatch("tie_qk cannot hold separate query and key bases; use dba_init: fresh".into());
    }
    let (wq, wk, wv, wo) = (
        to_mat(&teacher.wq)?,
        to_mat(&teacher.wk)?,
        to_mat(&teacher.wv)?,
        to_mat(&teacher.wo)?,
    );
    if wq.nrows() != h * dh || wk.nrows() != g * dh || wv.nrows() != g * dh || wo.ncols() != h * dh {
        return mismatch("teacher weight shapes disagree with its head counts".into());
    }
    let mut out = HashMap::new();
    match init {
        DbaInit::Fresh => return Ok(out),
        DbaInit::Random | DbaInit::Svd => {
            // The original's crude V/O copy: first rows of V, first columns of O.
            let v_rows = g * vh;
            let mut v = Mat::zeros(v_rows, d);
            let n = v_rows.min(wv.nrows());
            v.rows_mut(0, n).copy_from(&wv.rows(0, n));
            let mut o = Mat::zeros(d, h * vh);
            let n = (h * vh).min(wo.ncols());
            o.columns_mut(0, n).copy_from(&wo.columns(0, n));
            out.insert("v_proj.weight".into(), to_tensor(&v)?);
            out.insert("o_proj.weight".into(), to_tensor(&o)?);
            if init == DbaInit::Svd {
                for (name, w, heads) in [("q", &wq, h), ("k", &wk, g)] {
                    let (sem, geo) = svd_version_b(w, heads * sh, heads * gh);
                    out.insert(format!("{name}_sem.weight"), to_tensor(&sem)?);
                    out.insert(format!("{name}_geo.weight"), to_tensor(&geo)?);
                }
            }
            return Ok(out);
        }
        DbaInit::Aligned => {}
    }
    // Quadratic forms w Σ wᵀ under the input covariance Σ = XᵀX/n. With calibration inputs they
    // are Gram matrices of the projected activations P = X·Wᵀ (one candle matmul per map), which
    // keeps the d×d covariance out of the loop; data-free, Σ = I and they are W·Wᵀ.
    let projected = |w: &Tensor| -> Result<Option<Mat>, SurgeryError> {
        match calibration {
            Some(x) => {
                let x = x.to_device(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?;
                let w = w.to_device(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?;
                let n = x.dim(0)?.max(1) as f64;
                Ok(Some(to_mat(&x.matmul(&w.t()?)?)? / n.sqrt()))
            }
            None => Ok(None),
        }
    };
    let (pq, pk, pv) = (
        projected(&teacher.wq)?,
        projected(&teacher.wk)?,
        projected(&teacher.wv)?,
    );
    let quad = |w: &Mat, pw: &Option<Mat>, idx: &[usize]| -> Mat {
        match pw {
            Some(p) => {
                let cols = Mat::from_fn(p.nrows(), idx.len(), |r, c| p[(r, idx[c])]);
                cols.transpose() * &cols
            }
            None => {
                let r = rows(w, idx);
                &r * r.transpose()
            }
        }
    };
    let energies = |w: &Mat, pw: &Option<Mat>| -> Vec<f64> {
        (0..w.nrows())
            .map(|r| match pw {
                Some(p) => p.column(r).norm_squared(),
                None => w.row(r).norm_squared(),
            })
            .collect()
    };
    let p = dh / 2;
    let group = h / g;
    let (mut q_sem, mut k_sem) = (Mat::zeros(h * sh, d), Mat::zeros(g * sh, d));
    let (mut q_geo, mut k_geo) = (Mat::zeros(h * gh, d), Mat::zeros(g * gh, d));
    let (mut v_new, mut o_new) = (Mat::zeros(g * vh, d), Mat::zeros(d, h * vh));
    let mut freqs = Vec::with_capacity(g * gh / 2);
    let (eq, ek) = (energies(&wq, &pq), energies(&wk, &pk));
    for kv in 0..g {
        let k_rows = |dims: &[usize]| rows(&wk, &dims.iter().map(|i| kv * dh + i).collect::<Vec<_>>());
        let q_rows =
            |head: usize, dims: &[usize]| rows(&wq, &dims.iter().map(|i| head * dh + i).collect::<Vec<_>>());
        let heads: Vec<usize> = (kv * group..(kv + 1) * group).collect();
        // 1. Geometric pairs by contribution Σ_h ‖q_h,pair‖·‖k_pair‖.
        let pair_norm = |e: &[f64], base: usize, i: usize| (e[base + i] + e[base + i + p]).sqrt();
        let mut score: Vec<(usize, f64)> = (0..p)
            .map(|i| {
                let k_norm = pair_norm(&ek, kv * dh, i);
                (
                    i,
                    heads.iter().map(|&hq| pair_norm(&eq, hq * dh, i) * k_norm).sum(),
                )
            })
            .collect();
        score.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept: Vec<usize> = score.iter().take(gh / 2).map(|(i, _)| *i).collect();
        kept.sort_unstable();
        let geo_dims: Vec<usize> = kept.iter().copied().chain(kept.iter().map(|i| i + p)).collect();
        freqs.extend(kept.iter().map(|&i| teacher.inv_freq[i]));
        let geo_scale = (gh as f64).sqrt() / (dh as f64).sqrt();
        k_geo.rows_mut(kv * gh, gh).copy_from(&k_rows(&geo_dims));
        for &hq in &heads {
            q_geo
                .rows_mut(hq * gh, gh)
                .copy_from(&(q_rows(hq, &geo_dims) * geo_scale));
        }
        // 2. Semantic path: principal key directions on the remaining dims.
        let rest: Vec<usize> = (0..dh).filter(|i| !geo_dims.contains(i)).collect();
        if sh > 0 && !rest.is_empty() {
            let wk_r = k_rows(&rest);
            let k_idx: Vec<usize> = rest.iter().map(|i| kv * dh + i).collect();
            let a = top_directions(&quad(&wk, &pk, &k_idx), sh); // (sh, |R|)
            k_sem.rows_mut(kv * sh, sh).copy_from(&(&a * &wk_r));
            let c = (sh as f64).sqrt() / (dh as f64).sqrt();
            for &hq in &heads {
                q_sem
                    .rows_mut(hq * sh, sh)
                    .copy_from(&(&a * q_rows(hq, &rest) * c));
            }
        }
        // 3. Value bottleneck.
        let all: Vec<usize> = (0..dh).collect();
        let wv_g = rows(&wv, &all.iter().map(|i| kv * dh + i).collect::<Vec<_>>());
        let v_idx: Vec<usize> = (0..dh).map(|i| kv * dh + i).collect();
        let b = top_directions(&quad(&wv, &pv, &v_idx), vh); // (vh, dh)
        v_new.rows_mut(kv * vh, vh).copy_from(&(&b * &wv_g));
        for &hq in &heads {
            let wo_h = wo.columns(hq * dh, dh).into_owned();
            o_new.columns_mut(hq * vh, vh).copy_from(&(wo_h * b.transpose()));
        }
    }
    out.insert("q_sem.weight".into(), to_tensor(&q_sem)?);
    out.insert("k_sem.weight".into(), to_tensor(&k_sem)?);
    out.insert("q_geo.weight".into(), to_tensor(&q_geo)?);
    out.insert("k_geo.weight".into(), to_tensor(&k_geo)?);
    out.insert("v_proj.weight".into(), to_tensor(&v_new)?);
    out.insert("o_proj.weight".into(), to_tensor(&o_new)?);
    if gh > 0 {
        let f: Vec<f32> = freqs.iter().map(|&f| f as f32).collect();
        out.insert(
            GEO_INV_FREQ.into(),
            Tensor::from_vec(f, (g, gh / 2), &Device::Cpu)?,
        );
    }
    Ok(out)
}

/// The original's version B: W_c = diag(S)·Vh of an exact SVD; sem rows then geo rows, zero-padded.
fn svd_version_b(w: &Mat, sem_rows: usize, geo_rows: usize) -> (Mat, Mat) {
    let svd = w.clone().svd(false, true);
    let vt = svd.v_t.expect("v_t was requested");
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let wc = Mat::from_fn(order.len(), w.ncols(), |i, j| {
        svd.singular_values[order[i]] * vt[(order[i], j)]
    });
    let take = |start: usize, n: usize| {
        Mat::from_fn(n, w.ncols(), |i, j| {
            if start + i < wc.nrows() {
                wc[(start + i, j)]
            } else {
                0.0
            }
        })
    };
    (take(0, sem_rows), take(sem_rows, geo_rows))
}
