//! Decode tokens/s of a real model at a long context, per KV cache storage kind (a benchmark, not a
//! test). The cache of every layer is filled with `CTX` random K/V rows (their values do not change
//! the cost; a real 4K prefill through quantized stores takes minutes on two cores), then greedy
//! decode steps of SmolLM2-135M run over it. Kinds are timed in interleaved rounds (machine noise
//! hits all alike); the table shows the median step time and the ratio to the fp16 store.
//!
//! Run: `cargo bench --bench decode_context` (context 4096), `-- 8192` for another context.
//! `RAYON_NUM_THREADS` sets the threads.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use caramba::cache::{CacheKind, QuantKvSpec};
use caramba::loader::{LoadOptions, fetch, load_source};
use caramba::model::{ForwardCtx, KvCache, QuantKinds};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4096);
    let m = load_source(&fetch("smollm2-135m")?, &LoadOptions::default())?;
    let cfg = m.config.clone().ok_or("the model has no Llama config")?;
    let (nkv, hd) = (cfg.n_kv_heads, cfg.head_dim);
    let dev = Device::Cpu;
    let kinds = |k, v, rotate_k| QuantKinds {
        k,
        v,
        k_geo: None,
        rotate_k,
        center_k: true,
        rotate_v: false,
    };
    let configs = [
        ("fp16", kinds(CacheKind::Fp16, CacheKind::Fp16, false)),
        ("q8_0", kinds(CacheKind::Q8_0, CacheKind::Q8_0, false)),
        ("q8_0/q4_0", kinds(CacheKind::Q8_0, CacheKind::Q4_0, false)),
        ("q4_0", kinds(CacheKind::Q4_0, CacheKind::Q4_0, false)),
        ("q4_0+rot", kinds(CacheKind::Q4_0, CacheKind::Q4_0, true)),
        ("nf4", kinds(CacheKind::Nf4, CacheKind::Nf4, false)),
    ];
    let k = Tensor::randn(0f32, 1.0, (1, nkv, ctx, hd), &dev)?;
    let v = Tensor::randn(0f32, 1.0, (1, nkv, ctx, hd), &dev)?;
    let mut caches = Vec::new();
    for (_, q) in &configs {
        let mut cache = KvCache::quantized(m.model.n_slots(), *q);
        for slot in 0..m.model.n_slots() {
            cache
                .quant_store(slot, || QuantKvSpec {
                    rotate_k: q.rotate_k,
                    ..QuantKvSpec::uniform(1, nkv, hd, q.k, q.v)
                })?
                .append(&k, &v)?;
        }
        caches.push(cache);
    }
    let (rounds, steps) = (5, 8);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 0..=rounds {
        for (i, cache) in caches.iter_mut().enumerate() {
            let start = Instant::now();
            let mut tok = 1u32;
            for s in 0..steps {
                let ids = Tensor::from_slice(&[tok], (1, 1), &dev)?;
                let h = m
                    .model
                    .forward_hidden(&ids, &mut ForwardCtx::cached(cache, ctx + s))?;
                let logits = m.model.logits(&h)?.flatten_all()?.to_dtype(DType::F32)?;
                tok = logits.argmax(0)?.to_scalar::<u32>()?;
            }
            cache.truncate(ctx)?;
            if round > 0 {
                times[i].push(start.elapsed().as_secs_f64() / steps as f64);
            }
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let meds: Vec<f64> = times.iter_mut().map(median).collect();
    println!("context {ctx}, {rounds} interleaved rounds of {steps} decode steps, median per step");
    println!("| K / V storage | bytes/token | ms/step | tok/s | vs fp16 |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, q), (t, cache)) in configs.iter().zip(meds.iter().zip(&caches)) {
        let _ = q;
        println!(
            "| {name} | {} | {:.1} | {:.2} | {:.2}× |",
            cache.bytes() / ctx.max(1),
            t * 1e3,
            1.0 / t,
            meds[0] / t
        );
    }
    Ok(())
}
