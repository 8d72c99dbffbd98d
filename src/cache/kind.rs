//! Storage kinds of a KV cache stream and their exact sizes.
//!
//! A head vector of `width` values is cut into blocks of `min(32, width)` values; the last block is
//! shorter when `width` is not a multiple of the block (no padding, no block ever straddles two
//! heads). Per block, quantized kinds store one f16 scale and the codes:
//!
//! | kind | codes per block of n | bytes per block of 32 | bytes per value |
//! |---|---|---|---|
//! | `fp32` | n × f32 | 128 | 4 |
//! | `fp16`, `bf16` | n × 16 bit | 64 | 2 |
//! | `q8_0` | f16 scale + n × i8 | 34 | 1.0625 |
//! | `q4_0`, `nf4` | f16 scale + ⌈n/2⌉ bytes of nibbles | 18 | 0.5625 |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::CacheError;

/// Values per quantization block (llama.cpp's `QK8_0` / `QK4_0`).
pub const BLOCK: usize = 32;

/// How one stream (K, V, or a segment of K) of a KV cache stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum CacheKind {
    /// Plain f32.
    #[serde(rename = "fp32")]
    #[value(name = "fp32")]
    Fp32,
    /// IEEE half precision.
    #[serde(rename = "fp16")]
    #[value(name = "fp16")]
    Fp16,
    /// bfloat16.
    #[serde(rename = "bf16")]
    #[value(name = "bf16")]
    Bf16,
    /// llama.cpp q8_0: d = amax/127 (f16), q = round(x/d) in i8.
    #[serde(rename = "q8_0", alias = "q8")]
    #[value(name = "q8_0", alias = "q8")]
    Q8_0,
    /// llama.cpp q4_0: d = max/−8 (signed max-magnitude element, f16), nibble = min(15, ⌊x/d + 8.5⌋).
    #[serde(rename = "q4_0", alias = "q4")]
    #[value(name = "q4_0", alias = "q4")]
    Q4_0,
    /// bitsandbytes NF4: d = absmax (f16), nibble = nearest of the 16 NF4 levels to x/d.
    #[serde(rename = "nf4")]
    #[value(name = "nf4")]
    Nf4,
}

impl CacheKind {
    /// Every kind, in the order of the table above.
    pub const ALL: [CacheKind; 6] = [
        CacheKind::Fp32,
        CacheKind::Fp16,
        CacheKind::Bf16,
        CacheKind::Q8_0,
        CacheKind::Q4_0,
        CacheKind::Nf4,
    ];

    /// The manifest / CLI name (`fp32`, `fp16`, `bf16`, `q8_0`, `q4_0`, `nf4`).
    pub fn name(self) -> &'static str {
        match self {
            CacheKind::Fp32 => "fp32",
            CacheKind::Fp16 => "fp16",
            CacheKind::Bf16 => "bf16",
            CacheKind::Q8_0 => "q8_0",
            CacheKind::Q4_0 => "q4_0",
            CacheKind::Nf4 => "nf4",
        }
    }

    /// True for the block-quantized kinds (q8_0, q4_0, nf4).
    pub fn is_quantized(self) -> bool {
        matches!(self, CacheKind::Q8_0 | CacheKind::Q4_0 | CacheKind::Nf4)
    }

    /// Exact bytes of one head vector of `width` values, scales included.
    pub fn row_bytes(self, width: usize) -> usize {
        match self {
            CacheKind::Fp32 => 4 * width,
            CacheKind::Fp16 | CacheKind::Bf16 => 2 * width,
            CacheKind::Q8_0 => blocks(width).map(|(_, n)| 2 + n).sum(),
            CacheKind::Q4_0 | CacheKind::Nf4 => blocks(width).map(|(_, n)| 2 + n.div_ceil(2)).sum(),
        }
    }

    /// Exact bytes one token occupies in a stream of `n_heads` heads of `head_dim` values.
    pub fn bytes_per_token(self, head_dim: usize, n_heads: usize) -> usize {
        n_heads * self.row_bytes(head_dim)
    }
}

impl fmt::Display for CacheKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CacheKind {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // why: the original (and its documents) call q8_0 and q4_0 `q8` and `q4`.
        let s = match s {
            "q8" => "q8_0",
            "q4" => "q4_0",
            other => other,
        };
        CacheKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| CacheError::UnknownKind { given: s.to_string() })
    }
}

/// Block length for a head vector of `width` values: `min(32, width)`.
pub fn block_len(width: usize) -> usize {
    BLOCK.min(width)
}

/// The blocks of a head vector of `width` values as `(start, len)`: full blocks of
/// [`block_len`], then a shorter last block when `width` is not a multiple of it.
pub fn blocks(width: usize) -> impl Iterator<Item = (usize, usize)> {
    let bl = block_len(width).max(1);
    (0..width.div_ceil(bl)).map(move |i| (i * bl, bl.min(width - i * bl)))
}

/// Number of blocks of a head vector of `width` values.
pub fn n_blocks(width: usize) -> usize {
    width.div_ceil(block_len(width).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_serde_and_display() {
        for kind in CacheKind::ALL {
            assert_eq!(kind.name().parse::<CacheKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<CacheKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn the_originals_short_names_are_accepted() {
        assert_eq!("q8".parse::<CacheKind>().unwrap(), CacheKind::Q8_0);
        assert_eq!("q4".parse::<CacheKind>().unwrap(), CacheKind::Q4_0);
        assert_eq!(
            serde_json::from_str::<CacheKind>("\"q8\"").unwrap(),
            CacheKind::Q8_0
        );
        assert_eq!(
            serde_json::from_str::<CacheKind>("\"q4\"").unwrap(),
            CacheKind::Q4_0
        );
    }

    #[test]
    fn parse_error_lists_the_valid_names() {
        let err = "q5".parse::<CacheKind>().unwrap_err().to_string();
        assert!(err.contains("`q5`"), "{err}");
        for kind in CacheKind::ALL {
            assert!(err.contains(kind.name()), "{err} lacks {kind}");
        }
        let serde_err = serde_json::from_str::<CacheKind>("\"q5\"")
            .unwrap_err()
            .to_string();
        assert!(
            serde_err.contains("q8_0") && serde_err.contains("nf4"),
            "{serde_err}"
        );
    }

    #[test]
    fn bytes_per_token_matches_the_documented_rates() {
        // SmolLM2-135M: 3 KV heads of 64.
        assert_eq!(CacheKind::Fp32.bytes_per_token(64, 3), 3 * 64 * 4);
        assert_eq!(CacheKind::Fp16.bytes_per_token(64, 3), 3 * 64 * 2);
        assert_eq!(CacheKind::Bf16.bytes_per_token(64, 3), 3 * 64 * 2);
        assert_eq!(CacheKind::Q8_0.bytes_per_token(64, 3), 3 * 2 * 34);
        assert_eq!(CacheKind::Q4_0.bytes_per_token(64, 3), 3 * 2 * 18);
        assert_eq!(CacheKind::Nf4.bytes_per_token(64, 3), 3 * 2 * 18);
        // 1.0625 and 0.5625 bytes per value at whole blocks.
        assert_eq!(CacheKind::Q8_0.row_bytes(128) as f64 / 128.0, 1.0625);
        assert_eq!(CacheKind::Q4_0.row_bytes(128) as f64 / 128.0, 0.5625);
        // Partial blocks: 40 = 32 + 8, 24 = one block of 24, 33 = 32 + 1.
        assert_eq!(CacheKind::Q8_0.row_bytes(40), 34 + 10);
        assert_eq!(CacheKind::Q4_0.row_bytes(40), 18 + 6);
        assert_eq!(CacheKind::Q8_0.row_bytes(24), 26);
        assert_eq!(CacheKind::Nf4.row_bytes(24), 14);
        assert_eq!(CacheKind::Nf4.row_bytes(33), 18 + 3);
    }

    #[test]
    fn blocks_never_exceed_the_head_and_cover_it() {
        for width in [1usize, 7, 24, 31, 32, 33, 40, 64, 96, 100] {
            let bs: Vec<_> = blocks(width).collect();
            assert_eq!(bs.len(), n_blocks(width));
            assert_eq!(bs.iter().map(|b| b.1).sum::<usize>(), width);
            let mut next = 0;
            for (start, len) in bs {
                assert_eq!(start, next);
                assert!((1..=32).contains(&len));
                next += len;
            }
        }
    }
}
