//! candle's backward as caramba builds it (vendor/candle-core, CARAMBA_PATCH.md): a tensor's first
//! gradient is stored as it is, later ones are added to it. The oracle is the chain rule worked by
//! hand and evaluated in plain f64 loops, on fresh random inputs:
//!
//! ```text
//! Y = A·B (m, n)    Z = Y + c (c broadcast over rows)    W = D^T (D is (n, m))
//! F = Z⊙x + x⊙x + W⊙x + 3x        C = cat([x, E], 0) ((m + 2, n))
//! L = Σ R⊙F + Σ S⊙C               (R, S fixed random, no gradient)
//!
//! dL/dx = R⊙Z + 2R⊙x + R⊙D^T + 3R + S[..m]     (x feeds five consumers: accumulation)
//! dL/dA = (R⊙x)·B^T   dL/dB = A^T·(R⊙x)        (one consumer each: insertion)
//! dL/dc = Σ_rows R⊙x                           (through a broadcast)
//! dL/dD = (R⊙x)^T                              (through a transpose: a non-contiguous gradient)
//! dL/dE = S[m..]                               (a row slice of S's gradient: a view at an offset)
//! ```

use candle_core::{DType, Device, Result, Tensor, Var};

const TOLERANCE: f64 = 1e-12;

fn randn(shape: &[usize]) -> Result<Var> {
    Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &Device::Cpu)?)
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    t.to_vec2::<f64>()
}

/// Checks `got` (a stored gradient) against `want`, element by element, naming the worst element.
fn check(name: &str, got: &Tensor, want: &[Vec<f64>]) -> Result<()> {
    assert!(
        got.is_contiguous(),
        "d{name}: a stored gradient is not contiguous"
    );
    assert_eq!(got.dtype(), DType::F64, "d{name}");
    let got = rows(got)?;
    assert_eq!(got.len(), want.len(), "d{name}: rows");
    let mut worst = (0.0f64, 0, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "d{name}: columns of row {i}");
        for (j, (g, w)) in g.iter().zip(w).enumerate() {
            let err = (g - w).abs() / w.abs().max(1.0);
            if err >= worst.0 {
                worst = (err, i, j);
            }
        }
    }
    let (err, i, j) = worst;
    assert!(
        err <= TOLERANCE,
        "d{name}[{i}][{j}] = {} but the chain rule gives {} (relative error {err:e})",
        got[i][j],
        want[i][j]
    );
    Ok(())
}

fn transpose(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    (0..a[0].len())
        .map(|j| a.iter().map(|row| row[j]).collect())
        .collect()
}

fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .map(|row| {
            (0..b[0].len())
                .map(|j| row.iter().zip(b).map(|(x, b_row)| x * b_row[j]).sum())
                .collect()
        })
        .collect()
}

#[test]
fn shared_and_single_use_gradients_follow_the_chain_rule() -> Result<()> {
    let (m, k, n) = (3, 4, 5);
    // Three fresh draws: a wrong gradient cannot pass by luck of one input.
    for _ in 0..3 {
        let (a, b, c, d, e, x) = (
            randn(&[m, k])?,
            randn(&[k, n])?,
            randn(&[n])?,
            randn(&[n, m])?,
            randn(&[2, n])?,
            randn(&[m, n])?,
        );
        let r = Tensor::randn(0f64, 1.0, (m, n), &Device::Cpu)?;
        let s = Tensor::randn(0f64, 1.0, (m + 2, n), &Device::Cpu)?;
        let xt = x.as_tensor();

        let y = a.as_tensor().matmul(b.as_tensor())?;
        let z = y.broadcast_add(c.as_tensor())?;
        let w = d.as_tensor().t()?;
        let f = (((z.mul(xt)? + xt.mul(xt)?)? + w.mul(xt)?)? + (xt * 3.0)?)?;
        let cat = Tensor::cat(&[xt, e.as_tensor()], 0)?;
        let loss = (f.mul(&r)?.sum_all()? + cat.mul(&s)?.sum_all()?)?;
        let grads = loss.backward()?;
        let grad = |v: &Var, name: &str| {
            grads
                .get(v.as_tensor())
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("no gradient for {name}")))
        };

        // The oracle, from the inputs' values alone.
        let (av, bv, cv, dv, xv) = (
            rows(a.as_tensor())?,
            rows(b.as_tensor())?,
            c.as_tensor().to_vec1::<f64>()?,
            rows(d.as_tensor())?,
            rows(xt)?,
        );
        let (rv, sv) = (rows(&r)?, rows(&s)?);
        let yv = matmul(&av, &bv);
        let rx: Vec<Vec<f64>> = (0..m)
            .map(|i| (0..n).map(|j| rv[i][j] * xv[i][j]).collect())
            .collect();
        let want_x: Vec<Vec<f64>> = (0..m)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        let (rij, xij) = (rv[i][j], xv[i][j]);
                        rij * (yv[i][j] + cv[j]) + 2.0 * rij * xij + rij * dv[j][i] + 3.0 * rij + sv[i][j]
                    })
                    .collect()
            })
            .collect();
        let want_c = vec![(0..n).map(|j| (0..m).map(|i| rx[i][j]).sum()).collect()];

        check("x", &grad(&x, "x")?, &want_x)?;
        check("A", &grad(&a, "A")?, &matmul(&rx, &transpose(&bv)))?;
        check("B", &grad(&b, "B")?, &matmul(&transpose(&av), &rx))?;
        check("c", &grad(&c, "c")?.unsqueeze(0)?, &want_c)?;
        check("D", &grad(&d, "D")?, &transpose(&rx))?;
        check("E", &grad(&e, "E")?, &sv[m..])?;
    }
    Ok(())
}

/// Stored gradients share storage with each other where a backward hands one tensor to two
/// inputs (an add); they must still be independent values, each safe to replace.
#[test]
fn an_add_hands_both_inputs_equal_gradients_that_stay_independent() -> Result<()> {
    let (p, q) = (randn(&[4, 6])?, randn(&[4, 6])?);
    let r = Tensor::randn(0f64, 1.0, (4, 6), &Device::Cpu)?;
    let grads = (p.as_tensor() + q.as_tensor())?.mul(&r)?.sum_all()?.backward()?;
    let (gp, gq) = match (grads.get(p.as_tensor()), grads.get(q.as_tensor())) {
        (Some(gp), Some(gq)) => (gp.clone(), gq.clone()),
        _ => panic!("both inputs of the add have a gradient"),
    };
    let want = rows(&r)?;
    check("p", &gp, &want)?;
    check("q", &gq, &want)?;
    // Scaling one (as clipping does) builds a new tensor; the other keeps its values.
    let halved = (&gp * 0.5)?;
    check("q after p's was scaled", &gq, &want)?;
    let want_half: Vec<Vec<f64>> = want
        .iter()
        .map(|row| row.iter().map(|v| v * 0.5).collect())
        .collect();
    check("p scaled", &halved, &want_half)?;
    Ok(())
}
