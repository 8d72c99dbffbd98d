//! Decode attention over a KV cache at SmolLM2-135M shapes (9 query / 3 KV heads, head_dim 64,
//! batch 1, one new token): the direct path of `QuantKvStore::attend` per storage kind, serial and
//! over rayon, against candle's reference (dequantize the whole cache + `grouped_attention`) and
//! against `grouped_attention` on K/V tensors that already exist (today's plain-cache path).
//!
//! Run: `cargo bench --bench kv_cache` (context 4096), or `cargo bench --bench kv_cache -- 1024 16384`
//! for other context lengths. Every path is timed in interleaved rounds (so machine noise hits all
//! of them alike); the table shows the median time per call and the ratio to the fp16 direct path
//! of the same run and threading. "hot" repeats one layer (its cache stays in the CPU caches);
//! "30 layers" calls 30 layers in turn, as one decode step of SmolLM2-135M does. `--kind KIND`
//! (repeatable) times only those kinds' serial direct path, for profiling (`perf record`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use caramba::cache::{CacheKind, DecodeOptions, QuantKvSpec, QuantKvStore};
use caramba::ops::sdpa::{AttendOptions, grouped_attention};

const N_HEADS: usize = 9;
const N_KV: usize = 3;
const HEAD_DIM: usize = 64;
const LAYERS: usize = 30;
const ROUNDS: usize = 12;
const SLICE: Duration = Duration::from_millis(60);

type Job<'a> = Box<dyn FnMut() + 'a>;

/// Median seconds per call of each job, timed in `ROUNDS` interleaved slices after a warm-up.
fn time_all(jobs: &mut [Job]) -> Vec<f64> {
    let mut samples = vec![Vec::new(); jobs.len()];
    for job in jobs.iter_mut() {
        job();
    }
    for _ in 0..ROUNDS {
        for (job, s) in jobs.iter_mut().zip(&mut samples) {
            let start = Instant::now();
            while start.elapsed() < SLICE {
                let t0 = Instant::now();
                job();
                s.push(t0.elapsed().as_secs_f64());
            }
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.total_cmp(b));
            s[s.len() / 2]
        })
        .collect()
}

fn reference_opts() -> AttendOptions<'static> {
    AttendOptions {
        causal: false,
        train: false,
        dropout_p: 0.0,
        rng: None,
    }
}

fn opts(parallel: bool) -> DecodeOptions {
    DecodeOptions {
        causal: false,
        parallel,
        portable: false,
    }
}

struct Inputs {
    k: Tensor,
    v: Tensor,
    q: Tensor,
}

fn inputs(ctx: usize) -> candle_core::Result<Inputs> {
    let dev = Device::Cpu;
    Ok(Inputs {
        k: Tensor::randn(0f32, 1.0, (1, N_KV, ctx, HEAD_DIM), &dev)?,
        v: Tensor::randn(0f32, 1.0, (1, N_KV, ctx, HEAD_DIM), &dev)?,
        q: (Tensor::randn(0f32, 1.0, (1, N_HEADS, 1, HEAD_DIM), &dev)? / (HEAD_DIM as f64).sqrt())?,
    })
}

fn store(kind: CacheKind, x: &Inputs) -> candle_core::Result<QuantKvStore> {
    let mut store = QuantKvStore::new(QuantKvSpec::uniform(1, N_KV, HEAD_DIM, kind, kind))?;
    store.append(&x.k, &x.v)?;
    Ok(store)
}

/// `--kind K`: only the serial direct path of the given kinds.
fn profile(ctx: usize, kinds: &[CacheKind]) -> candle_core::Result<()> {
    let x = inputs(ctx)?;
    let stores = kinds
        .iter()
        .map(|&k| store(k, &x))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let q = &x.q;
    let mut jobs: Vec<Job> = stores
        .iter()
        .map(|s| -> Job {
            Box::new(move || drop(black_box(s.attend(q, None, opts(false)).expect("attend"))))
        })
        .collect();
    for (kind, t) in kinds.iter().zip(time_all(&mut jobs)) {
        let ns_per_row = t * 1e9 / (N_KV * ctx) as f64;
        println!(
            "{kind}: {:.1} µs per call, {ns_per_row:.2} ns per (KV head, position)",
            t * 1e6
        );
    }
    Ok(())
}

fn bench_context(ctx: usize) -> candle_core::Result<()> {
    let x = inputs(ctx)?;
    let threads = rayon::current_num_threads();
    println!(
        "\ncontext {ctx}, b 1, {N_HEADS} query / {N_KV} KV heads, head_dim {HEAD_DIM}, t 1, \
         {threads} rayon threads; µs per layer call (median), × = ratio to direct fp16"
    );
    let kinds = CacheKind::ALL;
    let stores = kinds
        .iter()
        .map(|&k| store(k, &x))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let layers: Vec<Vec<QuantKvStore>> = stores.iter().map(|s| vec![s.clone(); LAYERS]).collect();
    let dense: Vec<(DType, Tensor, Tensor, Tensor)> = [DType::F32, DType::F16]
        .into_iter()
        .map(|dt| Ok((dt, x.k.to_dtype(dt)?, x.v.to_dtype(dt)?, x.q.to_dtype(dt)?)))
        .collect::<candle_core::Result<_>>()?;

    // Direct path: serial, rayon, and 30 layers over rayon (per-layer time).
    let q = &x.q;
    let mut names = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for (kind, s) in kinds.iter().zip(&stores) {
        names.push((format!("direct {kind}"), s.bytes()));
        jobs.push(Box::new(move || {
            drop(black_box(s.attend(q, None, opts(false)).expect("attend")))
        }));
    }
    for s in &stores {
        jobs.push(Box::new(move || {
            drop(black_box(s.attend(q, None, opts(true)).expect("attend")))
        }));
    }
    for ls in &layers {
        jobs.push(Box::new(move || {
            for l in ls {
                black_box(l.attend(q, None, opts(true)).expect("attend"));
            }
        }));
    }
    // References: candle on the dequantized cache, and on dense tensors.
    for (kind, s) in kinds.iter().zip(&stores) {
        if matches!(kind, CacheKind::Fp16 | CacheKind::Q4_0) {
            names.push((
                format!("candle: dequantize-all {kind} + grouped_attention"),
                s.bytes(),
            ));
            jobs.push(Box::new(move || {
                let (kd, vd) = s.dequantize_all(&Device::Cpu).expect("dequantize");
                black_box(grouped_attention(q, &kd, &vd, None, reference_opts()).expect("attention"));
            }));
        }
    }
    for (dt, k, v, qd) in &dense {
        names.push((
            format!("candle: grouped_attention on {dt:?} K/V"),
            2 * k.elem_count() * dt.size_in_bytes(),
        ));
        jobs.push(Box::new(move || {
            black_box(grouped_attention(qd, k, v, None, reference_opts()).expect("attention"));
        }));
    }
    let t = time_all(&mut jobs);
    let n = kinds.len();
    let (serial, par, multi, refs) = (&t[..n], &t[n..2 * n], &t[2 * n..3 * n], &t[3 * n..]);
    let fp16 = kinds
        .iter()
        .position(|&k| k == CacheKind::Fp16)
        .expect("fp16 is a kind");
    println!(
        "{:<46} {:>9} {:>9} {:>6} {:>9} {:>6} {:>10} {:>6}",
        "path", "KV bytes", "serial", "×", "rayon", "×", "30 layers", "×"
    );
    for i in 0..n {
        let (name, bytes) = &names[i];
        println!(
            "{name:<46} {bytes:>9} {:>9.1} {:>6.2} {:>9.1} {:>6.2} {:>10.1} {:>6.2}",
            serial[i] * 1e6,
            serial[i] / serial[fp16],
            par[i] * 1e6,
            par[i] / par[fp16],
            multi[i] * 1e6 / LAYERS as f64,
            multi[i] / multi[fp16],
        );
    }
    for (i, r) in refs.iter().enumerate() {
        let (name, bytes) = &names[n + i];
        println!("{name:<46} {bytes:>9} {:>9.1} {:>6.2}", r * 1e6, r / serial[fp16]);
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
