//! Decode attention over a KV cache at SmolLM2-135M shapes (9 query / 3 KV heads, head_dim 64,
//! batch 1, one new token): the direct path of `QuantKvStore::attend` per storage kind, serial and
//! over rayon, against candle's reference (dequantize the whole cache + `grouped_attention`) and
//! against `grouped_attention` on K/V tensors that already exist (today's plain-cache path).
//!
//! Run: `cargo bench --bench kv_cache` (context 4096), or `cargo bench --bench kv_cache -- 1024 16384`
//! for other context lengths. Prints the median time per call and the ratio to the fp16 direct path
//! measured in the same run with the same threading. `--kind KIND` (repeatable) times only those
//! kinds' direct path, serially, for profiling (`perf record`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use caramba::cache::{CacheKind, DecodeOptions, QuantKvSpec, QuantKvStore};
use caramba::layer::sdpa::{AttendOptions, grouped_attention};

const N_HEADS: usize = 9;
const N_KV: usize = 3;
const HEAD_DIM: usize = 64;
const LAYERS: usize = 30;

/// Median seconds per call over ~`budget` of repeated calls (after a warm-up).
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 10 {
        let t0 = Instant::now();
        f();
        samples.push(t0.elapsed().as_secs_f64());
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn reference_opts() -> AttendOptions<'static> {
    AttendOptions {
        causal: false,
        train: false,
        dropout_p: 0.0,
        rng: None,
    }
}

/// `--kind K`: profile only the serial direct path of kind K, in a loop of `iters` calls.
fn profile(ctx: usize, kinds: &[CacheKind]) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let k = Tensor::randn(0f32, 1.0, (1, N_KV, ctx, HEAD_DIM), &dev)?;
    let v = Tensor::randn(0f32, 1.0, (1, N_KV, ctx, HEAD_DIM), &dev)?;
    let q = (Tensor::randn(0f32, 1.0, (1, N_HEADS, 1, HEAD_DIM), &dev)? / (HEAD_DIM as f64).sqrt())?;
    let serial = DecodeOptions {
        causal: false,
        parallel: false,
        portable: false,
    };
    for &kind in kinds {
        let mut store = QuantKvStore::new(QuantKvSpec::uniform(1, N_KV, HEAD_DIM, kind, kind))
            .map_err(candle_core::Error::from)?;
        store.append(&k, &v)?;
        let t = time(Duration::from_secs(2), || {
            black_box(store.attend(&q, None, serial).expect("attend"));
        });
        let ns_per_row = t * 1e9 / (N_KV * ctx) as f64;
        println!(
            "{kind}: {:.1} µs per call, {ns_per_row:.2} ns per (KV head, position)",
            t * 1e6
        );
    }
    Ok(())
}

fn bench_context(ctx: usize) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let k = Tensor::randn(0f32, 1.0, (1, N_KV, ctx, HEAD_DIM), &dev)?;
    let v = Tensor::randn(0f32, 1.0, (1, N_KV, ctx, HEAD_DIM), &dev)?;
    let q = (Tensor::randn(0f32, 1.0, (1, N_HEADS, 1, HEAD_DIM), &dev)? / (HEAD_DIM as f64).sqrt())?;
    let budget = Duration::from_millis(700);
    let threads = rayon::current_num_threads();
    println!(
        "\ncontext {ctx}, b 1, {N_HEADS} query / {N_KV} KV heads, head_dim {HEAD_DIM}, t 1, {threads} rayon threads"
    );

    let kinds = [
        CacheKind::Fp32,
        CacheKind::Fp16,
        CacheKind::Bf16,
        CacheKind::Q8_0,
        CacheKind::Q4_0,
        CacheKind::Nf4,
    ];
    let mut rows: Vec<(String, usize, f64, f64)> = Vec::new();
    let mut stores = Vec::new();
    let mut cold_rows: Vec<(String, f64)> = Vec::new();
    for kind in kinds {
        let mut store = QuantKvStore::new(QuantKvSpec::uniform(1, N_KV, HEAD_DIM, kind, kind))
            .map_err(candle_core::Error::from)?;
        store.append(&k, &v)?;
        let serial = DecodeOptions {
            causal: false,
            parallel: false,
            portable: false,
        };
        let par = DecodeOptions {
            parallel: true,
            ..serial
        };
        let t1 = time(budget, || {
            black_box(store.attend(&q, None, serial).expect("attend"));
        });
        let tp = time(budget, || {
            black_box(store.attend(&q, None, par).expect("attend"));
        });
        rows.push((format!("direct {kind}"), store.bytes(), t1, tp));
        // Cold: one call per layer of a 30-layer model (as one decode step of SmolLM2-135M), so
        // the caches do not stay in the CPU caches between calls of the same layer.
        let layers: Vec<QuantKvStore> = (0..LAYERS).map(|_| store.clone()).collect();
        let tc = time(budget, || {
            for layer in &layers {
                black_box(layer.attend(&q, None, par).expect("attend"));
            }
        }) / LAYERS as f64;
        cold_rows.push((format!("direct {kind}"), tc));
        stores.push((kind, store));
    }
    for (kind, store) in &stores {
        if !matches!(kind, CacheKind::Fp16 | CacheKind::Q4_0) {
            continue;
        }
        let t = time(budget, || {
            let (kd, vd) = store.dequantize_all(&dev).expect("dequantize");
            black_box(grouped_attention(&q, &kd, &vd, None, reference_opts()).expect("attention"));
        });
        rows.push((
            format!("candle dequantize-all {kind} + grouped_attention"),
            store.bytes(),
            t,
            f64::NAN,
        ));
    }
    for dtype in [DType::F32, DType::F16] {
        let (kt, vt, qt) = (k.to_dtype(dtype)?, v.to_dtype(dtype)?, q.to_dtype(dtype)?);
        let t = time(budget, || {
            black_box(grouped_attention(&qt, &kt, &vt, None, reference_opts()).expect("attention"));
        });
        let bytes = 2 * N_KV * ctx * HEAD_DIM * dtype.size_in_bytes();
        rows.push((
            format!("candle grouped_attention on {dtype:?} tensors"),
            bytes,
            t,
            f64::NAN,
        ));
    }

    let fp16 = rows.iter().find(|r| r.0 == "direct fp16").expect("fp16 row");
    let (base1, basep) = (fp16.2, fp16.3);
    println!(
        "{:<48} {:>10} {:>12} {:>8} {:>12} {:>8}",
        "path", "KV bytes", "serial µs", "× fp16", "rayon µs", "× fp16"
    );
    for (name, bytes, t1, tp) in &rows {
        let par = if tp.is_nan() {
            "—".to_string()
        } else {
            format!("{:.1}", tp * 1e6)
        };
        let parx = if tp.is_nan() {
            "—".to_string()
        } else {
            format!("{:.2}", tp / basep)
        };
        println!(
            "{name:<48} {bytes:>10} {:>12.1} {:>8.2} {par:>12} {parx:>8}",
            t1 * 1e6,
            t1 / base1
        );
    }
    let cold_fp16 = cold_rows
        .iter()
        .find(|r| r.0 == "direct fp16")
        .expect("fp16 row")
        .1;
    println!("\ncold ({LAYERS} layers per step, rayon): µs per layer call");
    for (name, t) in &cold_rows {
        println!("{name:<48} {:>12.1} {:>8.2}", t * 1e6, t / cold_fp16);
    }
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ctxs: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let ctxs = if ctxs.is_empty() { vec![4096] } else { ctxs };
    let kinds: Vec<CacheKind> = args
        .windows(2)
        .filter(|w| w[0] == "--kind")
        .map(|w| w[1].parse().map_err(candle_core::Error::from))
        .collect::<candle_core::Result<_>>()?;
    for ctx in ctxs {
        if kinds.is_empty() {
            bench_context(ctx)?;
        } else {
            profile(ctx, &kinds)?;
        }
    }
    Ok(())
}
