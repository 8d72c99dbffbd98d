//! Each optimizer's update against a plain f64 re-computation of its published formula, over a few
//! steps with fresh random parameters and gradients; state save/load resumes bit-exactly.

use candle_core::{Device, Tensor, Var};
use caramba::train::{Optimizer, OptimizerKind, TrainSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn fresh_rng() -> ChaCha8Rng {
    let seed = rand::rng().random::<u64>();
    println!("random seed {seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A matrix (decayed) and a vector (not decayed), as a model's weight and bias.
fn params(rng: &mut ChaCha8Rng) -> Vec<(String, Var, Vec<f64>)> {
    let w = random(rng, 12);
    let b = random(rng, 4);
    vec![
        (
            "a.weight".into(),
            Var::from_tensor(&Tensor::from_vec(w.clone(), (3, 4), &Device::Cpu).unwrap()).unwrap(),
            to64(&w),
        ),
        (
            "b.bias".into(),
            Var::from_tensor(&Tensor::from_vec(b.clone(), 4, &Device::Cpu).unwrap()).unwrap(),
            to64(&b),
        ),
    ]
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn values(var: &Var) -> Vec<f64> {
    to64(&var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
}

fn spec(kind: OptimizerKind) -> TrainSpec {
    TrainSpec {
        optimizer: kind,
        betas: [0.8, 0.95],
        eps: 1e-6,
        weight_decay: 0.1,
        momentum: 0.7,
        ..TrainSpec::default()
    }
}

/// Run `steps` updates with random grads through `Optimizer` and through `reference`, which gets
/// (param index, decayed?, params, grads, lr, t) and updates its f64 copy in place.
fn check(kind: OptimizerKind, mut reference: impl FnMut(usize, bool, &mut [f64], &[f64], f64, usize)) {
    let mut rng = fresh_rng();
    let mut ps = params(&mut rng);
    let vars: Vec<(String, Var)> = ps.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
    let mut opt = Optimizer::new(&spec(kind), vars).unwrap();
    for t in 1..=4 {
        let lr = 0.01 * t as f64;
        let mut grads = Vec::new();
        for (i, (_, var, p64)) in ps.iter_mut().enumerate() {
            let g = random(&mut rng, var.elem_count());
            grads.push(Some(
                Tensor::from_vec(g.clone(), var.shape(), &Device::Cpu).unwrap(),
            ));
            reference(i, var.rank() >= 2, p64, &to64(&g), lr, t);
        }
        opt.step(&grads, lr).unwrap();
        for (name, var, p64) in &ps {
            for (j, (got, want)) in values(var).iter().zip(p64.iter()).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{kind:?} step {t} {name}[{j}]: {got} vs {want}"
                );
            }
        }
    }
    assert_eq!(opt.steps(), 4);
}

#[test]
fn adamw_matches_its_formula() {
    let (b1, b2, eps, wd) = (0.8, 0.95, 1e-6, 0.1);
    let mut m = [vec![0.0; 12], vec![0.0; 4]];
    let mut v = m.clone();
    check(OptimizerKind::Adamw, |i, decayed, p, g, lr, t| {
        for j in 0..p.len() {
            m[i][j] = b1 * m[i][j] + (1.0 - b1) * g[j];
            v[i][j] = b2 * v[i][j] + (1.0 - b2) * g[j] * g[j];
            let m_hat = m[i][j] / (1.0 - b1.powi(t as i32));
            let v_hat = v[i][j] / (1.0 - b2.powi(t as i32));
            let decay = if decayed { wd * p[j] } else { 0.0 };
            p[j] -= lr * (m_hat / (v_hat.sqrt() + eps) + decay);
        }
    });
}

#[test]
fn sgd_with_momentum_matches_its_formula() {
    let (mu, wd) = (0.7, 0.1);
    let mut buf = [vec![0.0; 12], vec![0.0; 4]];
    check(OptimizerKind::Sgd, |i, decayed, p, g, lr, _| {
        for j in 0..p.len() {
            let g = g[j] + if decayed { wd * p[j] } else { 0.0 };
            buf[i][j] = mu * buf[i][j] + g;
            p[j] -= lr * buf[i][j];
        }
    });
}

#[test]
fn lion_matches_the_published_update() {
    let (b1, b2, wd) = (0.8, 0.95, 0.1);
    let mut m = [vec![0.0; 12], vec![0.0; 4]];
    check(OptimizerKind::Lion, |i, decayed, p, g, lr, _| {
        for j in 0..p.len() {
            let c = b1 * m[i][j] + (1.0 - b1) * g[j];
            let decay = if decayed { wd * p[j] } else { 0.0 };
            p[j] -= lr * (c.signum() + decay);
            m[i][j] = b2 * m[i][j] + (1.0 - b2) * g[j];
        }
    });
}

#[test]
fn swats_adam_phase_matches_its_formula_with_l2_decay() {
    // Random gradients never settle γ = sᵀs/(−sᵀg) within the default tolerance (1e-9): SWATS
    // stays in its Adam phase, Adam on the L2-decayed gradient.
    let (b1, b2, eps, wd) = (0.8, 0.95, 1e-6, 0.1);
    let mut m = [vec![0.0; 12], vec![0.0; 4]];
    let mut v = m.clone();
    check(OptimizerKind::Swats, |i, decayed, p, g, lr, t| {
        for j in 0..p.len() {
            let g = g[j] + if decayed { wd * p[j] } else { 0.0 };
            m[i][j] = b1 * m[i][j] + (1.0 - b1) * g;
            v[i][j] = b2 * v[i][j] + (1.0 - b2) * g * g;
            let m_hat = m[i][j] / (1.0 - b1.powi(t as i32));
            let v_hat = v[i][j] / (1.0 - b2.powi(t as i32));
            p[j] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    });
}

#[test]
fn pidao_matches_its_controller() {
    // The default gains: kp 1, ki 0.1, kd 0.01, integral_clip 10, derivative_ema 0.9.
    let (kp, ki, kd, c, bd, wd) = (1.0, 0.1, 0.01, 10.0, 0.9, 0.1);
    let mut integral = [vec![0.0; 12], vec![0.0; 4]];
    let mut derivative = integral.clone();
    let mut prev: [Option<Vec<f64>>; 2] = [None, None];
    check(OptimizerKind::Pidao, |i, decayed, p, g, lr, _| {
        for j in 0..p.len() {
            integral[i][j] = (integral[i][j] + g[j]).clamp(-c, c);
            let diff = prev[i].as_ref().map_or(0.0, |prev| g[j] - prev[j]);
            derivative[i][j] = bd * derivative[i][j] + (1.0 - bd) * diff;
            let decay = if decayed { wd * p[j] } else { 0.0 };
            p[j] -= lr * (kp * g[j] + ki * integral[i][j] + kd * derivative[i][j] + decay);
        }
        prev[i] = Some(g.to_vec());
    });
}

#[test]
fn saved_state_resumes_bit_exactly_and_checks_its_kind() {
    for kind in [
        OptimizerKind::Adamw,
        OptimizerKind::Sgd,
        OptimizerKind::Lion,
        OptimizerKind::Swats,
        OptimizerKind::Pidao,
    ] {
        let mut rng = fresh_rng();
        let a: Vec<(String, Var)> = params(&mut rng).into_iter().map(|(n, v, _)| (n, v)).collect();
        let grads_for = |rng: &mut ChaCha8Rng| -> Vec<Option<Tensor>> {
            a.iter()
                .map(|(_, v)| {
                    Some(Tensor::from_vec(random(rng, v.elem_count()), v.shape(), &Device::Cpu).unwrap())
                })
                .collect()
        };
        let g1 = grads_for(&mut rng);
        let g2 = grads_for(&mut rng);
        let mut opt_a = Optimizer::new(&spec(kind), a.clone()).unwrap();
        opt_a.step(&g1, 0.05).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        opt_a.save(&path).unwrap();

        let b: Vec<(String, Var)> = a
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap(),
                )
            })
            .collect();
        let mut opt_b = Optimizer::new(&spec(kind), b.clone()).unwrap();
        opt_b.load(&path).unwrap();
        assert_eq!(opt_b.steps(), 1);
        opt_a.step(&g2, 0.05).unwrap();
        opt_b.step(&g2, 0.05).unwrap();
        for ((name, va), (_, vb)) in a.iter().zip(&b) {
            assert_eq!(values(va), values(vb), "{kind:?} {name}");
        }

        let other = if kind == OptimizerKind::Lion {
            OptimizerKind::Adamw
        } else {
            OptimizerKind::Lion
        };
        let err = Optimizer::new(&spec(other), b.clone())
            .unwrap()
            .load(&path)
            .expect_err("kind differs");
        assert!(err.to_string().contains("state"), "{err}");
    }
}

#[test]
fn missing_parameter_state_is_named() {
    let mut rng = fresh_rng();
    let vars: Vec<(String, Var)> = params(&mut rng).into_iter().map(|(n, v, _)| (n, v)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    Optimizer::new(&spec(OptimizerKind::Adamw), vars[..1].to_vec())
        .unwrap()
        .save(&path)
        .unwrap();
    let err = Optimizer::new(&spec(OptimizerKind::Adamw), vars)
        .unwrap()
        .load(&path)
        .expect_err("b.bias missing");
    assert!(err.to_string().contains("b.bias"), "{err}");
}

#[test]
fn half_precision_parameters_accumulate_small_updates_in_f32_master_copies() {
    let mut rng = fresh_rng();
    for kind in [
        OptimizerKind::Adamw,
        OptimizerKind::Sgd,
        OptimizerKind::Lion,
        OptimizerKind::Swats,
        OptimizerKind::Pidao,
    ] {
        let init: Vec<f32> = (0..8).map(|_| rng.random_range(0.9f32..1.1)).collect();
        let bf16 = |v: &[f32]| {
            Tensor::from_vec(v.to_vec(), (2, 4), &Device::Cpu)
                .unwrap()
                .to_dtype(candle_core::DType::BF16)
                .unwrap()
        };
        let var = Var::from_tensor(&bf16(&init)).unwrap();
        // the starting point is the bf16-rounded value
        let init = var
            .as_tensor()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut spec = TrainSpec {
            weight_decay: 0.0,
            momentum: 0.0,
            ..spec(kind)
        };
        // why: PIDAO's integral of a constant gradient would grow its steps tenfold; without it
        // (and with D = 0 for a constant gradient) it steps lr·g like SGD. SWATS switches to SGD
        // at step 2 here (γ = lr for a constant all-ones gradient), whose momentum ramps up from 0:
        // its 200 steps fall short of 0.02 by Σ 1e-4·0.8^k ≈ 5e-4.
        spec.pid.ki = 0.0;
        let mut opt = Optimizer::new(&spec, vec![("w".into(), var.clone())]).unwrap();
        let grad = Some(Tensor::ones((2, 4), candle_core::DType::BF16, &Device::Cpu).unwrap());
        // why: each step moves p by 1e-4 (AdamW and Lion: lr·1; SGD: lr·g), far below bf16's spacing
        // of 2^-7 near 1, so without an f32 master copy the parameter would never move.
        for _ in 0..100 {
            opt.step(std::slice::from_ref(&grad), 1e-4).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        opt.save(&path).unwrap();
        let copy = Var::from_tensor(&var.as_tensor().copy().unwrap()).unwrap();
        let mut resumed = Optimizer::new(&spec, vec![("w".into(), copy.clone())]).unwrap();
        resumed.load(&path).unwrap();
        for _ in 0..100 {
            opt.step(std::slice::from_ref(&grad), 1e-4).unwrap();
            resumed.step(std::slice::from_ref(&grad), 1e-4).unwrap();
        }
        let got = var
            .as_tensor()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (g, p0) in got.iter().zip(&init) {
            assert!(
                (g - (p0 - 0.02)).abs() < 0.006,
                "{kind:?}: {p0} - 200·1e-4 gave {g}"
            );
        }
        let again = copy
            .as_tensor()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, again, "{kind:?}: resumed half-precision run differs");
    }
}
