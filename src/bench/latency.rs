//! Decode latency over a grid of prompt lengths × generation lengths × batch sizes × cache kinds:
//! random prompts, greedy decoding, warm-up runs then timed runs, the models interleaved run by
//! run so that they share the machine's state (thermal, other load) as evenly as possible.
//!
//! Per run: prefill = the prompt forward; TTFT = prefill + the first decode step; decode tokens/s
//! = `gen_len · batch / (time of the gen_len decode steps)`. Reading the logits back to the host
//! every step synchronises the device, so the timings are wall time of finished work.

use std::time::Instant;

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};

use super::{BenchError, BenchModel, LatencyResult, Stat};
use crate::cache::CacheKind;
use crate::console::Progress;
use crate::infer::Generator;
use crate::model::{KvCache, QuantKinds};

/// The points and repetitions of a latency benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyGrid {
    pub prompt_lens: Vec<usize>,
    pub gen_lens: Vec<usize>,
    pub batch_sizes: Vec<usize>,
    pub cache_kinds: Vec<CacheKind>,
    /// Untimed runs per point.
    pub warmup: usize,
    /// Timed runs per point (at least 1 is used).
    pub runs: usize,
}

impl From<&super::spec::LatencyBench> for LatencyGrid {
    fn from(b: &super::spec::LatencyBench) -> Self {
        Self {
            prompt_lens: b.prompt_lens.clone(),
            gen_lens: b.gen_lens.clone(),
            batch_sizes: b.batch_sizes.clone(),
            cache_kinds: b.cache_kinds.clone(),
            warmup: b.warmup,
            runs: b.runs,
        }
    }
}

/// A generator for `m` whose cache stores K and V as `kind`: the plain cache for f32 on an f32
/// model (what `generate` uses by default), the cache store otherwise.
pub fn session<'m>(m: &BenchModel<'m>, kind: CacheKind, max_len: usize) -> Generator<'m> {
    let g = Generator::new(m.model, max_len, DType::F32, &m.device);
    if kind == CacheKind::Fp32 && m.dtype == DType::F32 {
        g
    } else {
        g.with_cache(KvCache::quantized(m.model.n_slots(), QuantKinds::uniform(kind)))
    }
}

/// Timings of every model at every point of `grid`, in grid order (cache kind, batch, prompt,
/// generation), the models of one point next to each other.
pub fn measure_latency(models: &[BenchModel], grid: &LatencyGrid) -> Result<Vec<LatencyResult>, BenchError> {
    let timed = grid.runs.max(1);
    let points =
        grid.cache_kinds.len() * grid.batch_sizes.len() * grid.prompt_lens.len() * grid.gen_lens.len();
    let progress = Progress::new((points * models.len() * (grid.warmup + timed)) as u64, "latency");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::new();
    for &kind in &grid.cache_kinds {
        for &batch in &grid.batch_sizes {
            for &prompt_len in &grid.prompt_lens {
                for &gen_len in &grid.gen_lens {
                    progress.set_message(&format!("{kind} b={batch} prompt={prompt_len} gen={gen_len}"));
                    for m in models {
                        m.check_context(prompt_len + gen_len + 1, "the latency point")?;
                    }
                    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; models.len()];
                    for run in 0..grid.warmup + timed {
                        for (i, m) in models.iter().enumerate() {
                            let prompts: Vec<Vec<u32>> = (0..batch)
                                .map(|_| {
                                    (0..prompt_len)
                                        .map(|_| rng.random_range(0..m.vocab() as u32))
                                        .collect()
                                })
                                .collect();
                            let t = one_run(m, kind, &prompts, gen_len)?;
                            if run >= grid.warmup {
                                samples[i][0].push(t.prefill_s * 1e3);
                                samples[i][1].push((t.prefill_s + t.first_step_s) * 1e3);
                                samples[i][2].push((gen_len * batch) as f64 / t.decode_s.max(1e-9));
                            }
                            progress.inc(1);
                        }
                    }
                    for (m, [prefill, ttft, tps]) in models.iter().zip(samples) {
                        let stat = |v: &[f64]| {
                            Stat::from_samples(v).ok_or_else(|| BenchError::Model {
                                model: m.name.clone(),
                                message: "a latency run produced no finite timing".into(),
                            })
                        };
                        out.push(LatencyResult {
                            model: m.name.clone(),
                            prompt_len,
                            gen_len,
                            batch_size: batch,
                            cache_kind: kind.name().into(),
                            prefill_ms: stat(&prefill)?,
                            ttft_ms: stat(&ttft)?,
                            decode_tokens_per_sec: stat(&tps)?,
                            runs: timed,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

struct RunTimes {
    prefill_s: f64,
    first_step_s: f64,
    decode_s: f64,
}

fn one_run(
    m: &BenchModel,
    kind: CacheKind,
    prompts: &[Vec<u32>],
    gen_len: usize,
) -> Result<RunTimes, BenchError> {
    let fail = |e: crate::infer::GenerateError| BenchError::compute(&m.name, e);
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0) + gen_len + 1;
    let mut g = session(m, kind, max_len);
    let t0 = Instant::now();
    let logits = if prompts.len() == 1 {
        g.prefill(&prompts[0]).map_err(fail)?
    } else {
        g.prefill_batch(prompts).map_err(fail)?
    };
    let mut next = argmax_rows(&logits).map_err(|e| BenchError::compute(&m.name, e))?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut first_step_s = 0.0;
    for step in 0..gen_len {
        let logits = g.decode_step(&next).map_err(fail)?;
        next = argmax_rows(&logits).map_err(|e| BenchError::compute(&m.name, e))?;
        if step == 0 {
            first_step_s = t1.elapsed().as_secs_f64();
        }
    }
    Ok(RunTimes {
        prefill_s,
        first_step_s,
        decode_s: t1.elapsed().as_secs_f64(),
    })
}

/// Greedy token of each row of `logits` ((vocab,) or (rows, vocab)).
pub fn argmax_rows(logits: &Tensor) -> candle_core::Result<Vec<u32>> {
    let vocab = logits.dims().last().copied().unwrap_or(1).max(1);
    let v: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(v.chunks(vocab)
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i as u32)
        })
        .collect())
}
