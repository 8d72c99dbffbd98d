//! The quantized KV store and its direct decode attention against candle's grouped attention on
//! the dequantized cache (the reference path), on fresh random inputs: every kind, odd lengths,
//! partial blocks (head dims 24 and 40), GQA groups, causal multi-token queries, the null key/value,
//! the fp16 window, segmented K (DBA) and the Hadamard rotation; truncate/append = recomputation;
//! exact bytes.

use candle_core::{Device, Tensor};
use caramba::cache::{CacheError, CacheKind, DecodeOptions, QuantKvSpec, QuantKvStore, StreamSpec};
use caramba::ops::sdpa::{AttendOptions, NullKv, grouped_attention};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn rng() -> ChaCha8Rng {
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed} (replay: ChaCha8Rng::seed_from_u64)");
    ChaCha8Rng::seed_from_u64(seed)
}

fn randn(rng: &mut ChaCha8Rng, dims: &[usize], scale: f32) -> Tensor {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let z: f32 = StandardNormal.sample(rng);
            scale * z
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn reference(q: &Tensor, k: &Tensor, v: &Tensor, null: Option<(&Tensor, &Tensor)>, causal: bool) -> Tensor {
    let null = null.map(|(k, v)| NullKv { k, v });
    let opts = AttendOptions {
        causal,
        train: false,
        dropout_p: 0.0,
        rng: None,
    };
    grouped_attention(q, k, v, null, opts).unwrap()
}

/// Largest |a − b| and the index where it happens; fails on any NaN.
fn worst(a: &Tensor, b: &Tensor) -> (f32, usize) {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert!(a.iter().all(|x| x.is_finite()), "non-finite output");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold((0.0, 0), |(m, mi), (i, d)| if d > m { (d, i) } else { (m, mi) })
}

struct Case {
    b: usize,
    n_heads: usize,
    n_kv: usize,
    len: usize,
    t: usize,
    null: bool,
}

/// Fill a store with `len` positions appended in uneven pieces; returns q (b, n_heads, t, dk).
fn filled(
    rng: &mut ChaCha8Rng,
    spec: QuantKvSpec,
    case: &Case,
) -> (QuantKvStore, Tensor, Option<(Tensor, Tensor)>) {
    let (dk, dv) = (spec.k.width(), spec.v.width());
    let mut store = QuantKvStore::new(spec).unwrap();
    let mut done = 0;
    while done < case.len {
        let step = rng.random_range(1..=40).min(case.len - done);
        let k = randn(rng, &[case.b, case.n_kv, step, dk], 1.0);
        let v = randn(rng, &[case.b, case.n_kv, step, dv], 1.0);
        store.append(&k, &v).unwrap();
        done += step;
    }
    assert_eq!(store.len(), case.len);
    let q = randn(rng, &[case.b, case.n_heads, case.t, dk], 1.0 / (dk as f32).sqrt());
    let null = case.null.then(|| {
        (
            randn(rng, &[case.n_kv, dk], 1.0),
            randn(rng, &[case.n_kv, dv], 1.0),
        )
    });
    (store, q, null)
}

fn check_against_dequantized(rng: &mut ChaCha8Rng, spec: QuantKvSpec, case: &Case, label: &str) {
    let (store, q, null) = filled(rng, spec, case);
    let (k, v) = store.dequantize_all(&Device::Cpu).unwrap();
    let causal = case.t > 1;
    let want = reference(&q, &k, &v, null.as_ref().map(|(a, b)| (a, b)), causal);
    // Serial and split over rayon; the SIMD kernel (where the CPU has it) and the portable one.
    for (parallel, portable) in [(false, false), (true, false), (false, true), (true, true)] {
        let null = null.as_ref().map(|(k, v)| NullKv { k, v });
        let opts = DecodeOptions {
            causal,
            parallel,
            portable,
        };
        let got = store.attend(&q, null, opts).unwrap();
        let (err, at) = worst(&got, &want);
        assert!(err < 2e-5, "{label} {opts:?}: worst |Δ| {err} at {at}");
    }
}

const KINDS: [CacheKind; 6] = CacheKind::ALL;

#[test]
fn every_kind_pair_matches_attention_on_the_dequantized_cache() {
    let mut rng = rng();
    for (i, &kk) in KINDS.iter().enumerate() {
        for &vk in [KINDS[i], KINDS[(i + 3) % 6]].iter() {
            for head_dim in [64usize, 24, 40] {
                let case = Case {
                    b: 2,
                    n_heads: 6,
                    n_kv: 2,
                    len: 1 + 2 * rng.random_range(50..300),
                    t: 1,
                    null: rng.random_bool(0.5),
                };
                let spec = QuantKvSpec::uniform(case.b, case.n_kv, head_dim, kk, vk);
                check_against_dequantized(&mut rng, spec, &case, &format!("k {kk} v {vk} hd {head_dim}"));
            }
        }
    }
}

#[test]
fn causal_multi_token_queries_with_null_and_smollm_groups() {
    let mut rng = rng();
    for kind in [CacheKind::Q4_0, CacheKind::Q8_0, CacheKind::Nf4, CacheKind::Fp16] {
        for (t, len) in [(3usize, 3usize), (5, 77), (2, 300), (7, 1100)] {
            let case = Case {
                b: 1,
                n_heads: 9,
                n_kv: 3,
                len,
                t,
                null: t % 2 == 1,
            };
            let spec = QuantKvSpec::uniform(1, 3, 40, kind, kind);
            check_against_dequantized(&mut rng, spec, &case, &format!("{kind} t={t} len={len}"));
        }
    }
}

#[test]
fn queries_beyond_the_cache_and_bad_shapes_are_errors() {
    let mut rng = rng();
    let case = Case {
        b: 1,
        n_heads: 4,
        n_kv: 2,
        len: 3,
        t: 4,
        null: false,
    };
    let spec = QuantKvSpec::uniform(1, 2, 16, CacheKind::Q8_0, CacheKind::Q8_0);
    let (store, q, _) = filled(&mut rng, spec.clone(), &case);
    let err = store
        .attend(&q, None, DecodeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 queries cannot attend causally over 3"), "{err}");
    let q3 = randn(&mut rng, &[1, 3, 1, 16], 1.0);
    let err = store
        .attend(&q3, None, DecodeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 query heads cannot share 2 KV heads"), "{err}");
    let empty = QuantKvStore::new(spec).unwrap();
    let q1 = randn(&mut rng, &[1, 4, 1, 16], 1.0);
    assert!(empty.attend(&q1, None, DecodeOptions::default()).is_err());
}

#[test]
fn quantized_attention_stays_close_to_full_precision() {
    // The same K/V stored as fp32 and as each kind: the output error is the quantization's.
    let mut rng = rng();
    let (b, n_kv, n_heads, hd, len) = (1, 3, 9, 64, 513);
    let k = randn(&mut rng, &[b, n_kv, len, hd], 1.0);
    let v = randn(&mut rng, &[b, n_kv, len, hd], 1.0);
    let q = randn(&mut rng, &[b, n_heads, 1, hd], 1.0 / 8.0);
    let exact = reference(&q, &k, &v, None, false);
    for (kind, tol) in [
        (CacheKind::Fp32, 1e-5),
        (CacheKind::Fp16, 2e-3),
        (CacheKind::Bf16, 1.5e-2),
        (CacheKind::Q8_0, 1e-2),
        (CacheKind::Nf4, 8e-2),
        (CacheKind::Q4_0, 8e-2),
    ] {
        let mut store = QuantKvStore::new(QuantKvSpec::uniform(b, n_kv, hd, kind, kind)).unwrap();
        store.append(&k, &v).unwrap();
        let got = store.attend(&q, None, DecodeOptions::default()).unwrap();
        let (err, at) = worst(&got, &exact);
        eprintln!("{kind}: worst |Δ| against fp32 attention {err:e}");
        assert!(err < tol, "{kind}: worst |Δ| {err} at {at} (tolerance {tol})");
    }
}

#[test]
fn residual_window_is_served_exactly_and_survives_truncate() {
    let mut rng = rng();
    let (b, n_kv, hd, r) = (2, 2, 40, 13);
    let mut spec = QuantKvSpec::uniform(b, n_kv, hd, CacheKind::Q4_0, CacheKind::Nf4);
    spec.residual = r;
    let mut store = QuantKvStore::new(spec.clone()).unwrap();
    let mut all_k: Vec<Tensor> = Vec::new();
    let mut all_v: Vec<Tensor> = Vec::new();
    for step in [5usize, 1, 17, 1, 1, 30, 2] {
        let k = randn(&mut rng, &[b, n_kv, step, hd], 1.0);
        let v = randn(&mut rng, &[b, n_kv, step, hd], 1.0);
        store.append(&k, &v).unwrap();
        all_k.push(k);
        all_v.push(v);
    }
    let len = store.len();
    assert_eq!(store.residual_len(), r);
    let k_full = Tensor::cat(&all_k, 2).unwrap();
    let v_full = Tensor::cat(&all_v, 2).unwrap();
    let f16_exact = |x: &Tensor, from: usize, to: usize| {
        x.narrow(2, from, to - from)
            .unwrap()
            .to_dtype(candle_core::DType::F16)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
    };
    let (k, v) = store.dequantize_all(&Device::Cpu).unwrap();
    assert_eq!(
        worst(
            &k.narrow(2, len - r, r).unwrap(),
            &f16_exact(&k_full, len - r, len)
        )
        .0,
        0.0
    );
    assert_eq!(
        worst(
            &v.narrow(2, len - r, r).unwrap(),
            &f16_exact(&v_full, len - r, len)
        )
        .0,
        0.0
    );
    assert!(worst(&k.narrow(2, 0, len - r).unwrap(), &f16_exact(&k_full, 0, len - r)).0 > 0.0);
    let q = randn(&mut rng, &[b, 4, 1, hd], 0.2);
    let want = reference(&q, &k, &v, None, false);
    let got = store.attend(&q, None, DecodeOptions::default()).unwrap();
    assert!(worst(&got, &want).0 < 2e-5);
    assert_eq!(
        store.bytes(),
        len * spec.bytes_per_token() + r * b * n_kv * 2 * (2 * hd),
        "window bytes counted"
    );

    // Truncate inside the window: the surviving window positions stay exact.
    store.truncate(len - 4).unwrap();
    assert_eq!(store.residual_len(), r - 4);
    let (k, _) = store.dequantize_all(&Device::Cpu).unwrap();
    let from = len - r;
    assert_eq!(
        worst(
            &k.narrow(2, from, r - 4).unwrap(),
            &f16_exact(&k_full, from, len - 4)
        )
        .0,
        0.0
    );
    // Append again: the new positions join the window, and attention still matches.
    let k2 = randn(&mut rng, &[b, n_kv, 6, hd], 1.0);
    let v2 = randn(&mut rng, &[b, n_kv, 6, hd], 1.0);
    store.append(&k2, &v2).unwrap();
    assert_eq!(store.residual_len(), r);
    let (k, v) = store.dequantize_all(&Device::Cpu).unwrap();
    let n = store.len();
    assert_eq!(
        worst(&k.narrow(2, n - 6, 6).unwrap(), &f16_exact(&k2, 0, 6)).0,
        0.0,
        "new positions exact"
    );
    let q = randn(&mut rng, &[b, 4, 3, hd], 0.2);
    let want = reference(&q, &k, &v, None, true);
    let got = store.attend(&q, None, DecodeOptions::default()).unwrap();
    assert!(worst(&got, &want).0 < 2e-5);
    // Truncate below the window: those positions are served from the quantized rows.
    store.truncate(10).unwrap();
    assert_eq!(store.residual_len(), 0);
    assert_eq!(store.bytes(), 10 * spec.bytes_per_token());
}

#[test]
fn segmented_k_like_dba_with_rotation_and_its_own_v_width() {
    let mut rng = rng();
    // k = [k_sem (24, q4_0) ‖ k_geo (40, q8_0)], v (20, nf4): blocks 24 | 32 + 8 | 20.
    for (rotate_k, center_k) in [(false, false), (true, false), (true, true), (false, true)] {
        for residual in [0usize, 5] {
            let spec = QuantKvSpec {
                batch: 2,
                n_kv_heads: 2,
                k: StreamSpec::segmented(&[(24, CacheKind::Q4_0), (40, CacheKind::Q8_0)]),
                v: StreamSpec::uniform(20, CacheKind::Nf4),
                residual,
                rotate_k,
                center_k,
                rotate_v: center_k,
            };
            assert_eq!(spec.k.row_bytes(), (2 + 12) + (34 + 10));
            let case = Case {
                b: 2,
                n_heads: 4,
                n_kv: 2,
                len: 211,
                t: 1,
                null: true,
            };
            let label = format!("dba rotate={rotate_k} center+rotate_v={center_k} residual={residual}");
            check_against_dequantized(&mut rng, spec.clone(), &case, &label);
            let case = Case { t: 4, ..case };
            check_against_dequantized(&mut rng, spec, &case, &label);
        }
    }
}

#[test]
fn rotation_keeps_scores_and_cuts_q4_0_key_error_on_outlier_channels() {
    let mut rng = rng();
    let (b, n_kv, n_heads, hd, len) = (1, 2, 4, 64, 300);
    // Keys with a few large outlier channels (as real post-RoPE keys have).
    let mut kv: Vec<f32> = (0..b * n_kv * len * hd)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let outliers: Vec<usize> = (0..3).map(|_| rng.random_range(0..hd)).collect();
    for (i, x) in kv.iter_mut().enumerate() {
        if outliers.contains(&(i % hd)) {
            *x *= 25.0;
        }
    }
    let k = Tensor::from_vec(kv, (b, n_kv, len, hd), &Device::Cpu).unwrap();
    let v = randn(&mut rng, &[b, n_kv, len, hd], 1.0);
    let q = randn(&mut rng, &[b, n_heads, 1, hd], 0.02);
    let exact = reference(&q, &k, &v, None, false);
    let mut key_err = Vec::new();
    for (kind, rotate_k, tol) in [
        (CacheKind::Fp32, true, 1e-5),
        (CacheKind::Q4_0, false, f32::INFINITY),
        (CacheKind::Q4_0, true, 0.2),
    ] {
        let mut spec = QuantKvSpec::uniform(b, n_kv, hd, kind, CacheKind::Fp32);
        spec.rotate_k = rotate_k;
        let mut store = QuantKvStore::new(spec).unwrap();
        store.append(&k, &v).unwrap();
        let got = store.attend(&q, None, DecodeOptions::default()).unwrap();
        let (err, at) = worst(&got, &exact);
        assert!(err < tol, "{kind} rotate={rotate_k}: worst |Δ| {err} at {at}");
        let mse = key_mse(&store, &k);
        key_err.push(mse);
    }
    eprintln!(
        "key MSE: fp32+rotation {:e}, q4_0 {:e}, q4_0+rotation {:e}",
        key_err[0], key_err[1], key_err[2]
    );
    assert!(key_err[0] < 1e-10, "fp32 rotation round trip: {}", key_err[0]);
    assert!(
        key_err[2] < 0.5 * key_err[1],
        "rotation should cut the q4_0 key MSE: {} (rotated) vs {} (plain)",
        key_err[2],
        key_err[1]
    );
}

#[test]
fn truncate_then_append_equals_appending_the_kept_prefix() {
    let mut rng = rng();
    for kind in KINDS {
        let (b, n_kv, hd) = (1, 3, 40);
        let spec = QuantKvSpec::uniform(b, n_kv, hd, kind, kind);
        let k = randn(&mut rng, &[b, n_kv, 90, hd], 1.0);
        let v = randn(&mut rng, &[b, n_kv, 90, hd], 1.0);
        let k2 = randn(&mut rng, &[b, n_kv, 7, hd], 1.0);
        let v2 = randn(&mut rng, &[b, n_kv, 7, hd], 1.0);
        let mut a = QuantKvStore::new(spec.clone()).unwrap();
        a.append(&k, &v).unwrap();
        let err = a.truncate(91).unwrap_err();
        assert_eq!(
            err,
            CacheError::TruncateBeyondLen {
                requested: 91,
                len: 90
            }
        );
        a.truncate(33).unwrap();
        a.append(&k2, &v2).unwrap();
        let mut b_ = QuantKvStore::new(spec.clone()).unwrap();
        b_.append(&k.narrow(2, 0, 33).unwrap(), &v.narrow(2, 0, 33).unwrap())
            .unwrap();
        b_.append(&k2, &v2).unwrap();
        let (ka, va) = a.dequantize_all(&Device::Cpu).unwrap();
        let (kb, vb) = b_.dequantize_all(&Device::Cpu).unwrap();
        assert_eq!(worst(&ka, &kb).0, 0.0, "{kind}");
        assert_eq!(worst(&va, &vb).0, 0.0, "{kind}");
        assert_eq!(a.bytes(), 40 * spec.bytes_per_token());
        assert_eq!(a.bytes(), b_.bytes());
        assert!(a.capacity_bytes() >= a.bytes());
        a.reset();
        assert_eq!((a.len(), a.bytes(), a.capacity_bytes()), (0, 0, 0));
    }
}

#[test]
fn bytes_follow_the_kind_table_exactly() {
    let mut rng = rng();
    for kind in KINDS {
        for hd in [64usize, 24, 40] {
            let (b, n_kv) = (2, 3);
            let mut store =
                QuantKvStore::new(QuantKvSpec::uniform(b, n_kv, hd, kind, CacheKind::Q8_0)).unwrap();
            let len = rng.random_range(1..200);
            store
                .append(
                    &randn(&mut rng, &[b, n_kv, len, hd], 1.0),
                    &randn(&mut rng, &[b, n_kv, len, hd], 1.0),
                )
                .unwrap();
            let want = len * b * (kind.bytes_per_token(hd, n_kv) + CacheKind::Q8_0.bytes_per_token(hd, n_kv));
            assert_eq!(store.bytes(), want, "{kind} hd {hd}");
        }
    }
}

#[test]
fn centering_keeps_scores_and_cuts_q4_0_key_error_when_keys_share_an_offset() {
    let mut rng = rng();
    let (b, n_kv, n_heads, hd, len) = (1, 2, 4, 64, 300);
    // Keys = a per-channel offset shared by every position (as real keys have) + noise.
    let offset: Vec<f32> = (0..hd)
        .map(|_| {
            let z: f32 = StandardNormal.sample(&mut rng);
            6.0 * z
        })
        .collect();
    let kv: Vec<f32> = (0..b * n_kv * len * hd)
        .map(|i| {
            let z: f32 = StandardNormal.sample(&mut rng);
            offset[i % hd] + z
        })
        .collect();
    let k = Tensor::from_vec(kv, (b, n_kv, len, hd), &Device::Cpu).unwrap();
    let v = randn(&mut rng, &[b, n_kv, len, hd], 1.0);
    let q = randn(&mut rng, &[b, n_heads, 1, hd], 0.05);
    let exact = reference(&q, &k, &v, None, false);
    let mut errs = Vec::new();
    for (kind, center_k) in [
        (CacheKind::Fp32, true),
        (CacheKind::Q4_0, false),
        (CacheKind::Q4_0, true),
    ] {
        let mut spec = QuantKvSpec::uniform(b, n_kv, hd, kind, CacheKind::Fp32);
        spec.rotate_k = true;
        spec.center_k = center_k;
        // Prompt first (the mean comes from it), then single decode steps, as in generation.
        let mut store = QuantKvStore::new(spec).unwrap();
        store
            .append(
                &k.narrow(2, 0, len - 3).unwrap(),
                &v.narrow(2, 0, len - 3).unwrap(),
            )
            .unwrap();
        for p in len - 3..len {
            store
                .append(&k.narrow(2, p, 1).unwrap(), &v.narrow(2, p, 1).unwrap())
                .unwrap();
        }
        let got = store.attend(&q, None, DecodeOptions::default()).unwrap();
        let mse = key_mse(&store, &k);
        errs.push((worst(&got, &exact).0, mse));
    }
    eprintln!(
        "(attention |Δ|, key MSE): fp32 {:?}, q4_0 {:?}, q4_0 centered {:?}",
        errs[0], errs[1], errs[2]
    );
    assert!(
        errs[0].0 < 1e-5 && errs[0].1 < 1e-9,
        "fp32 is exact: {:?}",
        errs[0]
    );
    assert!(
        errs[2].1 < 0.5 * errs[1].1,
        "centering should cut the q4_0 key MSE: {:?} vs {:?}",
        errs[2],
        errs[1]
    );
    assert!(
        errs[2].0 < errs[1].0,
        "and the attention error: {:?} vs {:?}",
        errs[2],
        errs[1]
    );
}

/// Mean squared error of the keys a store gives back against the keys it was given.
fn key_mse(store: &QuantKvStore, k: &Tensor) -> f32 {
    let (kd, _) = store.dequantize_all(&Device::Cpu).unwrap();
    (kd - k)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
