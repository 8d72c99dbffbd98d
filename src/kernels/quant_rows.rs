//! Rows of a quantized cache as the GPU decode kernel reads them: for each row of `width` values,
//! `width / 32` blocks of an f16 scale followed by the codes (q8_0: 32 int8 = 34 B; q4_0: 16 B
//! of nibbles = 18 B; element i < 16 in the low nibble of byte i, i + 16 in its high nibble).
//! These are llama.cpp's `block_q8_0` / `block_q4_0`, and the formulas are `cache::quant`'s.

use crate::cache::CacheKind;
use crate::cache::quant::{quantize_q4_0, quantize_q8_0};

/// Quantize `values` (rows of `width`, a multiple of 32) to `kind` (q8_0 or q4_0).
pub fn quantize_rows(values: &[f32], width: usize, kind: CacheKind) -> Result<Vec<u8>, String> {
    if width == 0 || width % 32 != 0 || values.len() % width != 0 {
        return Err(format!(
            "rows of {width} values: the width must be a positive multiple of 32"
        ));
    }
    let mut out = Vec::with_capacity(values.len() / width * kind.row_bytes(width));
    for block in values.chunks(32) {
        match kind {
            CacheKind::Q8_0 => {
                let mut qs = [0i8; 32];
                let d = quantize_q8_0(block, &mut qs);
                out.extend_from_slice(&d.to_le_bytes());
                out.extend(qs.iter().map(|&q| q as u8));
            }
            CacheKind::Q4_0 => {
                let mut qs = [0u8; 16];
                let d = quantize_q4_0(block, &mut qs);
                out.extend_from_slice(&d.to_le_bytes());
                out.extend_from_slice(&qs);
            }
            other => {
                return Err(format!(
                    "the GPU decode kernel reads q8_0 and q4_0 rows, not {other}"
                ));
            }
        }
    }
    Ok(out)
}

/// Inverse of [`quantize_rows`], for references.
pub fn dequantize_rows(bytes: &[u8], width: usize, kind: CacheKind) -> Result<Vec<f32>, String> {
    use crate::cache::quant::{dequantize_q4_0, dequantize_q8_0};
    let block_bytes = kind.row_bytes(32);
    if !matches!(kind, CacheKind::Q8_0 | CacheKind::Q4_0) || bytes.len() % block_bytes != 0 || width % 32 != 0
    {
        return Err(format!("{} bytes are not whole {kind} blocks", bytes.len()));
    }
    let mut out = Vec::with_capacity(bytes.len() / block_bytes * 32);
    let mut vals = [0f32; 32];
    for blk in bytes.chunks(block_bytes) {
        let d = half::f16::from_le_bytes([blk[0], blk[1]]);
        if kind == CacheKind::Q8_0 {
            let qs: Vec<i8> = blk[2..].iter().map(|&b| b as i8).collect();
            dequantize_q8_0(d, &qs, &mut vals);
        } else {
            dequantize_q4_0(d, &blk[2..], &mut vals);
        }
        out.extend_from_slice(&vals);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn rows_round_trip_within_a_quantization_step() {
        let mut rng = rand::rng();
        let values: Vec<f32> = (0..64 * 3).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        for (kind, steps) in [(CacheKind::Q8_0, 127.0), (CacheKind::Q4_0, 8.0)] {
            let bytes = quantize_rows(&values, 64, kind).expect("quantize");
            assert_eq!(bytes.len(), 3 * kind.row_bytes(64));
            let back = dequantize_rows(&bytes, 64, kind).expect("dequantize");
            for (blk, got) in values.chunks(32).zip(back.chunks(32)) {
                let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in blk.iter().zip(got) {
                    // q4_0 clips the side opposite the largest value at 7 steps: one full step of error.
                    assert!((a - b).abs() <= amax / steps + 1e-3 * amax, "{kind}: {a} vs {b}");
                }
            }
        }
        assert!(quantize_rows(&values, 48, CacheKind::Q8_0).is_err());
        assert!(quantize_rows(&values, 64, CacheKind::Nf4).is_err());
    }
}
