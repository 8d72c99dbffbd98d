//! Decode and prefill throughput of a real model (a benchmark, not a test: no assertions on time).
//!
//! `cargo bench --bench decode` loads `$CARAMBA_BENCH_MODEL` (default: `smollm2-135m`, fetched into
//! the cache on first use) and prints one JSON line per configuration: prefill tokens/s over a
//! 512-token prompt and greedy decode tokens/s over 128 new tokens (eos ignored), best of 3.
//! `$CARAMBA_BENCH_REQUANTIZE` = `native` (default), `q8_0`, `q4_0` or `f32` picks how GGUF blocks are kept.

use std::time::Instant;

use candle_core::DType;
use candle_core::quantized::GgmlDType;
use caramba::infer::{GenerateConfig, Generator, SamplingParams};
use caramba::loader::{LoadOptions, ModelSource, fetch, load_source};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = std::env::var("CARAMBA_BENCH_MODEL").unwrap_or_else(|_| "smollm2-135m".into());
    let source = if model == "smollm2-135m" {
        fetch(&model)?
    } else {
        ModelSource::parse(&model)?
    };
    let mode = std::env::var("CARAMBA_BENCH_REQUANTIZE").unwrap_or_else(|_| "native".into());
    let opts = match mode.as_str() {
        "q8_0" => LoadOptions {
            requantize: Some(GgmlDType::Q8_0),
            ..LoadOptions::default()
        },
        "f32" => LoadOptions {
            dequantize: true,
            ..LoadOptions::default()
        },
        "q4_0" => LoadOptions {
            requantize: Some(GgmlDType::Q4_0),
            ..LoadOptions::default()
        },
        _ => LoadOptions::default(),
    };
    let started = Instant::now();
    let m = load_source(&source, &opts)?;
    let load_s = started.elapsed().as_secs_f64();
    let vocab = m.config.as_ref().map_or(32000, |c| c.vocab_size) as u32;
    // A fixed pseudo-random prompt (the throughput does not depend on the ids).
    let prompt: Vec<u32> = (0..512u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % (vocab - 100) + 100)
        .collect();
    let cfg = GenerateConfig {
        max_new_tokens: 128,
        sampling: SamplingParams::greedy(),
        eos_token_ids: vec![],
    };
    let (mut best_prefill, mut best_decode) = (0f64, 0f64);
    for _ in 0..3 {
        let mut g = Generator::new(&m.model, m.max_seq_len, DType::F32, &m.device);
        let t = Instant::now();
        g.prefill(&prompt)?;
        best_prefill = best_prefill.max(prompt.len() as f64 / t.elapsed().as_secs_f64());
        let mut g = Generator::new(&m.model, m.max_seq_len, DType::F32, &m.device);
        let mut stream = g.stream(&prompt[..8], &cfg);
        for t in stream.by_ref() {
            t?;
        }
        best_decode = best_decode.max(stream.stats().decode_tokens_per_sec());
    }
    println!(
        "{}",
        serde_json::json!({
            "model": m.path, "weights": mode, "threads": std::env::var("RAYON_NUM_THREADS").ok(),
            "load_s": load_s, "prefill_512_tokens_per_sec": best_prefill, "decode_tokens_per_sec": best_decode,
        })
    );
    Ok(())
}
