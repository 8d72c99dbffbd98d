//! Attention and topology semantics on fresh random inputs: causality, GQA = standard attention
//! with repeated K/V weights, cached decoding = full forward, and what each topology computes.

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_nn::VarBuilder;
use caramba::layer::{Attention, AttentionMode, AttentionSpec};
use caramba::model::{ForwardCtx, KvCache, SeededVarMap};
use caramba::topology::{Node, NodeSpec};

fn spec(d: usize, nh: usize, nkv: usize) -> AttentionSpec {
    serde_json::from_value(serde_json::json!({
        "d_model": d, "n_heads": nh, "n_kv_heads": nkv,
        "mode": if nh == nkv { "standard" } else { "gqa" },
    }))
    .expect("valid spec")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn attention_is_causal() -> Result<()> {
    let dev = Device::Cpu;
    let vars = SeededVarMap::new(fresh_seed());
    let att = Attention::build(&spec(32, 4, 2), 0, vars.var_builder(DType::F32, &dev).pp("att"))?;
    let xs = Tensor::randn(0f32, 1.0, (2, 7, 32), &dev)?;
    let ys = att.forward(&xs, &mut ForwardCtx::eval())?;
    // Change the future (positions 4..7): outputs 0..4 must not move.
    let changed = Tensor::cat(
        &[xs.narrow(1, 0, 4)?, Tensor::randn(0f32, 1.0, (2, 3, 32), &dev)?],
        1,
    )?;
    let ys2 = att.forward(&changed, &mut ForwardCtx::eval())?;
    assert!(max_abs_diff(&ys.narrow(1, 0, 4)?, &ys2.narrow(1, 0, 4)?) == 0.0);
    assert!(max_abs_diff(&ys.narrow(1, 4, 3)?, &ys2.narrow(1, 4, 3)?) > 1e-4);
    Ok(())
}

#[test]
fn gqa_equals_standard_attention_with_repeated_kv_weights() -> Result<()> {
    let dev = Device::Cpu;
    let (d, nh, nkv) = (48, 6, 2);
    let hd = d / nh;
    let g = nh / nkv;
    let rnd = |shape: (usize, usize)| Tensor::randn(0f32, 0.2, shape, &dev);
    let (wq, wk, wv, wo) = (
        rnd((d, d))?,
        rnd((nkv * hd, d))?,
        rnd((nkv * hd, d))?,
        rnd((d, d))?,
    );
    // HF repeat_kv order: KV head j serves query heads j·g .. (j+1)·g.
    let repeat = |w: &Tensor| -> Result<Tensor> {
        let rows: Vec<Tensor> = (0..nh)
            .map(|h| w.narrow(0, (h / g) * hd, hd))
            .collect::<Result<_>>()?;
        Tensor::cat(&rows, 0)
    };
    let weights = |k: Tensor, v: Tensor| -> HashMap<String, Tensor> {
        [
            ("q_proj", wq.clone()),
            ("k_proj", k),
            ("v_proj", v),
            ("o_proj", wo.clone()),
        ]
        .into_iter()
        .map(|(n, t)| (format!("{n}.weight"), t))
        .collect()
    };
    let gqa_vb = VarBuilder::from_tensors(weights(wk.clone(), wv.clone()), DType::F32, &dev);
    let std_vb = VarBuilder::from_tensors(weights(repeat(&wk)?, repeat(&wv)?), DType::F32, &dev);
    let gqa = Attention::build(&spec(d, nh, nkv), 0, gqa_vb)?;
    let std = Attention::build(&spec(d, nh, nh), 0, std_vb)?;
    let xs = Tensor::randn(0f32, 1.0, (2, 9, d), &dev)?;
    let diff = max_abs_diff(
        &gqa.forward(&xs, &mut ForwardCtx::eval())?,
        &std.forward(&xs, &mut ForwardCtx::eval())?,
    );
    assert!(diff < 1e-5, "GQA vs repeated standard: {diff}");
    assert_eq!(spec(d, nh, nkv).mode, AttentionMode::Gqa);
    Ok(())
}

#[test]
fn cached_decoding_equals_full_forward() -> Result<()> {
    let dev = Device::Cpu;
    let vars = SeededVarMap::new(fresh_seed());
    let att = Attention::build(&spec(32, 4, 1), 0, vars.var_builder(DType::F32, &dev))?;
    let xs = Tensor::randn(0f32, 1.0, (1, 11, 32), &dev)?;
    let full = att.forward(&xs, &mut ForwardCtx::eval())?;
    let mut cache = KvCache::new(1, DType::F32);
    // Prefill 6 tokens, then decode the other 5 one at a time (crossing no capacity edge) …
    let mut outs = vec![att.forward(&xs.narrow(1, 0, 6)?, &mut ForwardCtx::cached(&mut cache, 0))?];
    for p in 6..11 {
        outs.push(att.forward(&xs.narrow(1, p, 1)?, &mut ForwardCtx::cached(&mut cache, p))?);
    }
    let stepped = Tensor::cat(&outs, 1)?;
    assert!(max_abs_diff(&full, &stepped) < 1e-5);
    // … and rollback: truncate to 8, re-decode position 8 → same output as before.
    cache.truncate(8)?;
    let again = att.forward(&xs.narrow(1, 8, 1)?, &mut ForwardCtx::cached(&mut cache, 8))?;
    assert!(max_abs_diff(&again, &full.i((.., 8..9, ..))?) < 1e-5);
    assert!(cache.truncate(100).is_err());
    Ok(())
}

#[test]
fn cache_grows_past_its_initial_capacity() -> Result<()> {
    let dev = Device::Cpu;
    let vars = SeededVarMap::new(fresh_seed());
    let att = Attention::build(&spec(16, 2, 2), 0, vars.var_builder(DType::F32, &dev))?;
    let t = 150; // initial capacity is 64: crosses two doublings.
    let xs = Tensor::randn(0f32, 1.0, (1, t, 16), &dev)?;
    let full = att.forward(&xs, &mut ForwardCtx::eval())?;
    let mut cache = KvCache::new(1, DType::F32);
    let mut outs = Vec::new();
    for p in 0..t {
        outs.push(att.forward(&xs.narrow(1, p, 1)?, &mut ForwardCtx::cached(&mut cache, p))?);
    }
    assert!(max_abs_diff(&full, &Tensor::cat(&outs, 1)?) < 1e-5);
    assert_eq!(cache.len(), t);
    Ok(())
}

fn build(spec: serde_json::Value) -> Result<(Node, SeededVarMap)> {
    let spec: NodeSpec = serde_json::from_value(spec).expect("valid node");
    let vars = SeededVarMap::new(fresh_seed());
    let mut slots = 0;
    let node = Node::build(&spec, vars.var_builder(DType::F32, &Device::Cpu), &mut slots)?;
    Ok((node, vars))
}

#[test]
fn branching_concatenates_features_and_parallel_sums_a_stacked_axis() -> Result<()> {
    let lin = |d_out: usize| serde_json::json!({"type": "LinearLayer", "d_in": 8, "d_out": d_out});
    let xs = Tensor::randn(0f32, 1.0, (3, 5, 8), &Device::Cpu)?;
    let (branching, _) = build(serde_json::json!({"type": "BranchingTopology", "layers": [lin(4), lin(6)]}))?;
    assert_eq!(
        branching.forward(&xs, &mut ForwardCtx::eval())?.dims(),
        &[3, 5, 10]
    );

    let (parallel, vars) =
        build(serde_json::json!({"type": "ParallelTopology", "layers": [lin(8), lin(8)]}))?;
    let ys = parallel.forward(&xs, &mut ForwardCtx::eval())?;
    let named: HashMap<_, _> = vars.named_vars().into_iter().collect();
    let branch = |i: usize| -> Result<Tensor> {
        let w = named[&format!("layers.{i}.weight")].as_tensor().clone();
        let b = named[&format!("layers.{i}.bias")].as_tensor().clone();
        xs.broadcast_matmul(&w.t()?)?.broadcast_add(&b)
    };
    assert!(max_abs_diff(&ys, &(branch(0)? + branch(1)?)?) < 1e-5);
    Ok(())
}

#[test]
fn residual_adds_the_input_once_around_the_whole_inner_sequence() -> Result<()> {
    let lin = serde_json::json!({"type": "linear", "d_in": 8, "d_out": 8});
    let (residual, vars) = build(serde_json::json!({"type": "residual", "layers": [lin, lin]}))?;
    let xs = Tensor::randn(0f32, 1.0, (2, 3, 8), &Device::Cpu)?;
    let named: HashMap<_, _> = vars.named_vars().into_iter().collect();
    let lin = |i: usize, x: &Tensor| -> Result<Tensor> {
        let w = named[&format!("layers.{i}.weight")].as_tensor().clone();
        x.broadcast_matmul(&w.t()?)?
            .broadcast_add(named[&format!("layers.{i}.bias")].as_tensor())
    };
    let want = (&xs + lin(1, &lin(0, &xs)?)?)?;
    assert!(max_abs_diff(&residual.forward(&xs, &mut ForwardCtx::eval())?, &want) < 1e-5);
    Ok(())
}

#[test]
fn cyclic_reuses_its_weights_for_each_iteration() -> Result<()> {
    let lin = serde_json::json!({"type": "linear", "d_in": 8, "d_out": 8, "bias": false});
    let (cyclic, vars) =
        build(serde_json::json!({"type": "CyclicTopology", "iterations": 3, "layers": [lin]}))?;
    assert_eq!(vars.named_vars().len(), 1, "one weight shared by all iterations");
    let w = vars.named_vars()[0].1.as_tensor().clone();
    let xs = Tensor::randn(0f32, 1.0, (1, 4, 8), &Device::Cpu)?;
    let mut want = xs.clone();
    for _ in 0..3 {
        want = want.broadcast_matmul(&w.t()?)?;
    }
    assert!(max_abs_diff(&cyclic.forward(&xs, &mut ForwardCtx::eval())?, &want) < 1e-4);
    Ok(())
}

#[test]
fn fused_and_differentiable_paths_agree() -> Result<()> {
    use caramba::layer::{RmsNorm, RmsNormSpec};
    use rand::SeedableRng;
    let dev = Device::Cpu;
    let vars = SeededVarMap::new(fresh_seed());
    let norm_spec: RmsNormSpec = serde_json::from_value(serde_json::json!({"d_model": 24})).expect("spec");
    let norm = RmsNorm::build(&norm_spec, vars.var_builder(DType::F32, &dev).pp("norm"))?;
    // Non-trivial weights so the scale matters.
    let w = vars
        .named_vars()
        .into_iter()
        .find(|(n, _)| n == "norm.weight")
        .expect("weight")
        .1;
    w.set(&Tensor::randn(1f32, 0.3, 24, &dev)?)?;
    let xs = Tensor::randn(0f32, 2.0, (2, 5, 24), &dev)?;
    assert!(max_abs_diff(&norm.forward(&xs, true)?, &norm.forward(&xs, false)?) < 1e-5);

    let att = Attention::build(&spec(24, 6, 3), 0, vars.var_builder(DType::F32, &dev).pp("att"))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(fresh_seed());
    let train = att.forward(&xs, &mut ForwardCtx::train(&mut rng))?;
    let eval = att.forward(&xs, &mut ForwardCtx::eval())?;
    assert!(max_abs_diff(&train, &eval) < 1e-5);
    Ok(())
}

#[test]
fn quantized_cache_decoding_matches_the_full_forward() -> Result<()> {
    use caramba::cache::CacheKind;
    use caramba::layer::DecoupledAttention;
    use caramba::model::QuantKinds;
    let dev = Device::Cpu;
    let vars = SeededVarMap::new(fresh_seed());
    let att = Attention::build(&spec(64, 4, 2), 0, vars.var_builder(DType::F32, &dev).pp("std"))?;
    let dba_spec: AttentionSpec = serde_json::from_value(serde_json::json!({
        "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "mode": "decoupled",
        "sem_dim": 32, "geo_dim": 64, "v_dim": 64, "null_attn": true
    }))
    .expect("valid");
    let dba = DecoupledAttention::build(&dba_spec, 0, vars.var_builder(DType::F32, &dev).pp("dba"))?;
    let xs = Tensor::randn(0f32, 1.0, (1, 13, 64), &dev)?;
    type Fwd<'a> = Box<dyn Fn(&Tensor, &mut ForwardCtx) -> Result<Tensor> + 'a>;
    let layers: Vec<(&str, Fwd)> = vec![
        ("standard", Box::new(|x, c| att.forward(x, c))),
        ("decoupled", Box::new(|x, c| dba.forward(x, c))),
    ];
    for (name, fwd) in &layers {
        let full = fwd(&xs, &mut ForwardCtx::eval())?;
        let scale = full.abs()?.max_all()?.to_scalar::<f32>()?;
        for (kind, tol) in [
            (CacheKind::Fp32, 1e-5),
            (CacheKind::Q8_0, 2e-2),
            (CacheKind::Q4_0, 2e-1),
        ] {
            let mut cache = KvCache::quantized(1, QuantKinds::uniform(kind));
            let mut outs = vec![fwd(&xs.narrow(1, 0, 7)?, &mut ForwardCtx::cached(&mut cache, 0))?];
            for p in 7..13 {
                outs.push(fwd(&xs.narrow(1, p, 1)?, &mut ForwardCtx::cached(&mut cache, p))?);
            }
            let rel = max_abs_diff(&full, &Tensor::cat(&outs, 1)?) / scale;
            assert!(rel < tol, "{name} {kind:?}: relative error {rel}");
            assert_eq!(cache.len(), 13);
            cache.truncate(9)?;
            assert_eq!(cache.len(), 9);
        }
    }
    Ok(())
}
