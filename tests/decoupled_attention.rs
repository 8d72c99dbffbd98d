//! Decoupled Bottleneck Attention against a naive per-element reference, with GQA sharing, the
//! gate (static and dynamic), null attention and RoPE; cached decoding = full forward.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use caramba::layer::{AttentionSpec, DecoupledAttention, LayerSpec};
use caramba::model::{ForwardCtx, KvCache, SeededVarMap};
use caramba::ops::rope::Rope;

fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn dba(extra: serde_json::Value) -> AttentionSpec {
    let mut v = serde_json::json!({
        "d_model": 24, "n_heads": 4, "n_kv_heads": 2, "mode": "decoupled",
        "sem_dim": 8, "geo_dim": 16, "v_dim": 12,
    });
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let spec: AttentionSpec = serde_json::from_value(v).expect("valid spec");
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    spec
}

/// Linear map with weight (out, in) on a (t, in) matrix, as plain vectors.
fn lin(w: &Tensor, x: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let w: Vec<Vec<f32>> = w.to_vec2().unwrap();
    x.iter()
        .map(|row| {
            w.iter()
                .map(|wr| wr.iter().zip(row).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect()
}

fn rope_rows(rope: &Rope, x: &[f32], hd: usize, pos: usize) -> Vec<f32> {
    let (cos, sin) = rope.cos_sin(pos, 1, &Device::Cpu).unwrap();
    let (cos, sin): (Vec<f32>, Vec<f32>) = (
        cos.flatten_all().unwrap().to_vec1().unwrap(),
        sin.flatten_all().unwrap().to_vec1().unwrap(),
    );
    let h = hd / 2;
    (0..hd)
        .map(|i| {
            if i < h {
                x[i] * cos[i] - x[i + h] * sin[i]
            } else {
                x[i - h] * sin[i - h] + x[i] * cos[i - h]
            }
        })
        .collect()
}

/// The DBA formula written out element by element for one sequence.
fn naive(spec: &AttentionSpec, w: &HashMap<String, Tensor>, xs: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let (nh, nkv) = (spec.n_heads, spec.kv_heads());
    let (sh, gh, vh) = (8 / nh, 16 / nh, 12 / nh);
    let g = nh / nkv;
    let t = xs.len();
    let qs = lin(&w["q_sem.weight"], xs);
    let ks = lin(&w["k_sem.weight"], xs);
    let qg = lin(&w["q_geo.weight"], xs);
    let kg = lin(&w["k_geo.weight"], xs);
    let v = lin(&w["v_proj.weight"], xs);
    let rope = Rope::new(gh, spec.rope_base, None);
    let gate: Option<Vec<f32>> = w.get("gate_logit").map(|t| t.to_vec1().unwrap());
    let gate_dyn = w.get("gate_proj.weight").map(|wp| lin(wp, xs));
    let mut merged = vec![vec![0f32; nh * vh]; t];
    for h in 0..nh {
        let kvh = h / g;
        for i in 0..t {
            let mut q_s: Vec<f32> = qs[i][h * sh..(h + 1) * sh].to_vec();
            let mut q_g = rope_rows(&rope, &qg[i][h * gh..(h + 1) * gh], gh, i);
            if let Some(gl) = &gate {
                let z = gl[h] + gate_dyn.as_ref().map_or(0.0, |d| d[i][h]);
                let gv = 1.0 / (1.0 + (-z).exp());
                q_s.iter_mut().for_each(|x| *x *= 2.0 * gv);
                q_g.iter_mut().for_each(|x| *x *= 2.0 - 2.0 * gv);
            }
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
            let mut scores = Vec::new();
            let mut values = Vec::new();
            if let (Some(kn), Some(vn)) = (w.get("k_null"), w.get("v_null")) {
                let kn: Vec<Vec<f32>> = kn.to_vec2().unwrap();
                let vn: Vec<Vec<f32>> = vn.to_vec2().unwrap();
                scores.push(
                    dot(&q_s, &kn[kvh][..sh]) / (sh as f32).sqrt()
                        + dot(&q_g, &kn[kvh][sh..]) / (gh as f32).sqrt(),
                );
                values.push(vn[kvh].clone());
            }
            for j in 0..=i {
                let k_s = &ks[j][kvh * sh..(kvh + 1) * sh];
                let k_g = rope_rows(&rope, &kg[j][kvh * gh..(kvh + 1) * gh], gh, j);
                scores.push(dot(&q_s, k_s) / (sh as f32).sqrt() + dot(&q_g, &k_g) / (gh as f32).sqrt());
                values.push(v[j][kvh * vh..(kvh + 1) * vh].to_vec());
            }
            let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f32 = e.iter().sum();
            for (p, val) in e.iter().zip(&values) {
                for d in 0..vh {
                    merged[i][h * vh + d] += p / z * val[d];
                }
            }
        }
    }
    lin(&w["o_proj.weight"], &merged)
}

fn check_against_naive(extra: serde_json::Value) -> Result<()> {
    let spec = dba(extra);
    let vars = SeededVarMap::new(fresh_seed());
    let layer = DecoupledAttention::build(&spec, 0, vars.var_builder(DType::F32, &Device::Cpu))?;
    // Gates start at zero (g = 0.5, the identity); move them so they matter.
    for (name, var) in vars.named_vars() {
        if name.starts_with("gate") {
            var.set(&Tensor::randn(0f32, 1.0, var.shape(), &Device::Cpu)?)?;
        }
    }
    let w: HashMap<String, Tensor> = vars
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let t = 6;
    let xs = Tensor::randn(0f32, 1.0, (1, t, 24), &Device::Cpu)?;
    let got: Vec<Vec<f32>> = layer
        .forward(&xs, &mut ForwardCtx::eval())?
        .squeeze(0)?
        .to_vec2()?;
    let want = naive(&spec, &w, &xs.squeeze(0)?.to_vec2()?);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        for (d, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "position {i} feature {d}: {a} vs {b}"
            );
        }
    }
    Ok(())
}

#[test]
fn matches_the_formula_with_gqa_sharing() -> Result<()> {
    check_against_naive(serde_json::json!({}))
}

#[test]
fn matches_the_formula_with_static_and_dynamic_gates() -> Result<()> {
    check_against_naive(serde_json::json!({"decoupled_gate": true}))?;
    check_against_naive(serde_json::json!({"decoupled_gate": true, "decoupled_gate_dynamic": true}))
}

#[test]
fn null_attention_keeps_the_diagonal_visible() -> Result<()> {
    // The original's non-chunked path hid each token from itself when null_attn was on.
    check_against_naive(serde_json::json!({"null_attn": true}))?;
    let spec = dba(serde_json::json!({"null_attn": true}));
    let vars = SeededVarMap::new(fresh_seed());
    let layer = DecoupledAttention::build(&spec, 0, vars.var_builder(DType::F32, &Device::Cpu))?;
    let xs = Tensor::randn(0f32, 1.0, (1, 1, 24), &Device::Cpu)?;
    let other = Tensor::randn(0f32, 1.0, (1, 1, 24), &Device::Cpu)?;
    // A single token sees the null and itself: its output depends on its own value.
    let a = layer.forward(&xs, &mut ForwardCtx::eval())?;
    let b = layer.forward(&other, &mut ForwardCtx::eval())?;
    assert!((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? > 1e-4);
    Ok(())
}

#[test]
fn cached_decoding_equals_full_forward_and_the_cache_is_small() -> Result<()> {
    let spec =
        dba(serde_json::json!({"null_attn": true, "decoupled_gate": true, "decoupled_gate_dynamic": true}));
    let vars = SeededVarMap::new(fresh_seed());
    let layer = DecoupledAttention::build(&spec, 0, vars.var_builder(DType::F32, &Device::Cpu))?;
    let xs = Tensor::randn(0f32, 1.0, (2, 9, 24), &Device::Cpu)?;
    let full = layer.forward(&xs, &mut ForwardCtx::eval())?;
    let mut cache = KvCache::new(1, DType::F32);
    let mut outs = vec![layer.forward(&xs.narrow(1, 0, 4)?, &mut ForwardCtx::cached(&mut cache, 0))?];
    for p in 4..9 {
        outs.push(layer.forward(&xs.narrow(1, p, 1)?, &mut ForwardCtx::cached(&mut cache, p))?);
    }
    let diff = (full - Tensor::cat(&outs, 1)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(diff < 1e-5, "{diff}");
    // 2 KV heads × (2 sem + 4 geo + 3 v) values per token, f32, batch 2, 9 tokens.
    assert_eq!(spec.cache_values_per_token(), 2 * (2 + 4 + 3));
    assert_eq!(cache.bytes(), 2 * 9 * spec.cache_values_per_token() * 4);
    Ok(())
}

#[test]
fn spec_errors_name_the_field() {
    // A spec that parses reports its problems; a mode-only field in the wrong mode, or a missing
    // DBA width, is already a parse error at that field (the mode is an enum, not optional fields).
    let bad = |v: serde_json::Value| -> Vec<String> {
        match serde_json::from_value::<AttentionSpec>(v) {
            Ok(spec) => spec.problems().into_iter().map(|p| p.field).collect(),
            Err(e) => {
                let msg = e.to_string();
                let field = msg.split(caramba::topology::PATH_SEP).next().unwrap_or_default();
                vec![field.to_string()]
            }
        }
    };
    let base =
        serde_json::json!({"d_model": 24, "n_heads": 4, "mode": "decoupled", "sem_dim": 8, "geo_dim": 16});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    assert_eq!(bad(with("sem_dim", 10.into())), vec!["sem_dim"]);
    assert_eq!(
        bad(with("geo_dim", 12.into())),
        vec!["geo_dim"],
        "12/4 = 3 is odd under RoPE"
    );
    assert_eq!(bad(with("n_kv_heads", 3.into())), vec!["n_kv_heads"]);
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("geo_dim");
    assert_eq!(bad(missing), vec!["geo_dim"]);
    let std = serde_json::json!({"d_model": 24, "n_heads": 4, "sem_dim": 8});
    assert_eq!(
        bad(std),
        vec!["sem_dim"],
        "DBA fields are rejected outside decoupled mode"
    );
}
