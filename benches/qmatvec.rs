//! Quantized matrix × vector throughput on this CPU (a benchmark, not a test).
//!
//! `cargo bench --bench qmatvec` builds SmolLM2-135M's decode products from random weights (per
//! layer: q/o 576×576, k/v 192×576, gate/up 1536×576, down 576×1536; 30 layers, ~66 MB of Q4_1
//! blocks, more than the caches hold, as in real decoding) plus its tied 49152×576 Q8_0 head, and
//! times one pass over all of them per token (file-layout and repacked Q4_1 kernels), best of 20, as GB/s of weight bytes read and the
//! equivalent tokens/s. Threads: `RAYON_NUM_THREADS` / `CARAMBA_THREADS`.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use caramba::ops::q4_1_packed::PackedQ4_1;
use caramba::ops::qmatvec::quantized_matvec;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !caramba::ops::qmatvec::available() {
        println!("{{\"skipped\": \"this CPU lacks AVX-512 VNNI\"}}");
        return Ok(());
    }
    let dev = Device::Cpu;
    let (d, ff, kv, vocab, layers) = (576, 1536, 192, 49152, 30);
    let shapes = [(d, d), (kv, d), (kv, d), (d, d), (ff, d), (ff, d), (d, ff)];
    let mut blocks = Vec::new();
    for _ in 0..layers {
        for &(n, k) in &shapes {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            blocks.push(QTensor::quantize(&w, GgmlDType::Q4_1)?);
        }
    }
    let head = QTensor::quantize(&Tensor::randn(0f32, 1.0, (vocab, d), &dev)?, GgmlDType::Q8_0)?;
    let x_d = Tensor::randn(0f32, 1.0, (1, 1, d), &dev)?;
    let x_ff = Tensor::randn(0f32, 1.0, (1, 1, ff), &dev)?;
    let bytes = |q: &QTensor| q.storage_size_in_bytes();
    let block_bytes: usize = blocks.iter().map(bytes).sum();
    let head_bytes = bytes(&head);
    let time = |f: &dyn Fn() -> candle_core::Result<()>| -> candle_core::Result<f64> {
        f()?;
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let blocks_s = time(&|| {
        for q in &blocks {
            let x = if q.shape().dims()[1] == ff { &x_ff } else { &x_d };
            quantized_matvec(q, x, false)?.expect("kernel applies");
        }
        Ok(())
    })?;
    let packed: Vec<PackedQ4_1> = blocks
        .iter()
        .map(|q| PackedQ4_1::pack(q).map(|p| p.expect("packs")))
        .collect::<candle_core::Result<_>>()?;
    let packed_s = time(&|| {
        for p in &packed {
            let x = if p.dims().1 == ff { &x_ff } else { &x_d };
            p.matvec(x)?;
        }
        Ok(())
    })?;
    let head_s = time(&|| {
        quantized_matvec(&head, &x_d, true)?.expect("kernel applies");
        Ok(())
    })?;
    println!(
        "{}",
        serde_json::json!({
            "threads": caramba::ops::spin_pool::threads(),
            "blocks_mb": block_bytes as f64 / 1e6, "blocks_ms": blocks_s * 1e3,
            "blocks_gb_per_s": block_bytes as f64 / blocks_s / 1e9,
            "packed_ms": packed_s * 1e3, "packed_gb_per_s": block_bytes as f64 / packed_s / 1e9,
            "head_mb": head_bytes as f64 / 1e6, "head_ms": head_s * 1e3,
            "head_gb_per_s": head_bytes as f64 / head_s / 1e9,
            "tokens_per_sec_bound": 1.0 / (blocks_s.min(packed_s) + head_s),
        })
    );
    Ok(())
}
