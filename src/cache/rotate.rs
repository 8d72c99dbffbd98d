//! Orthogonal Hadamard rotation of head vectors before quantization (QuaRot / QuIP# style).
//!
//! A normalized fast Walsh–Hadamard transform `H/√n` is symmetric and orthogonal, so it is its own
//! inverse and `(Hq)·(Hk) = q·k`: keys are stored rotated, the query is rotated by the same matrix
//! and the scores are unchanged in exact arithmetic. Rotation spreads an outlier channel over the
//! whole block, so the per-block scale no longer has to cover it alone.
//!
//! A width that is not a power of two is rotated block-diagonally: its binary decomposition
//! (largest power-of-two chunk first, e.g. 40 = 32 + 8, 24 = 16 + 8), each chunk on its own.

/// Rotate `x` in place with the block-diagonal normalized Walsh–Hadamard transform. Applying it
/// twice gives back `x` (up to f32 rounding).
pub fn hadamard_in_place(x: &mut [f32]) {
    let mut rest = x;
    while !rest.is_empty() {
        let n = 1usize << (usize::BITS - 1 - rest.len().leading_zeros());
        let (chunk, tail) = rest.split_at_mut(n);
        fwht(chunk);
        rest = tail;
    }
}

/// In-place normalized FWHT of a power-of-two length slice.
fn fwht(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            let (a, b) = x[i..i + 2 * h].split_at_mut(h);
            for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                let (s, d) = (*u + *v, *u - *v);
                *u = s;
                *v = d;
            }
        }
        h *= 2;
    }
    let norm = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= norm);
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;

    fn randn(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| StandardNormal.sample(rng)).collect()
    }

    /// The dense Sylvester Hadamard matrix entry (−1)^popcount(i & j) / √n.
    fn dense(x: &[f32]) -> Vec<f32> {
        let n = x.len();
        (0..n)
            .map(|i| {
                let s: f64 = (0..n)
                    .map(|j| {
                        if (i & j).count_ones() % 2 == 0 {
                            x[j] as f64
                        } else {
                            -x[j] as f64
                        }
                    })
                    .sum();
                (s / (n as f64).sqrt()) as f32
            })
            .collect()
    }

    #[test]
    fn matches_the_dense_matrix_is_an_involution_and_keeps_dot_products() {
        let seed: u64 = rand::rng().random();
        eprintln!("seed {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for n in [1usize, 2, 8, 64, 128] {
            let x = randn(&mut rng, n);
            let mut y = x.clone();
            hadamard_in_place(&mut y);
            for (a, b) in y.iter().zip(dense(&x)) {
                assert!((a - b).abs() < 1e-5, "n={n}: {a} vs {b}");
            }
        }
        for n in [24usize, 40, 64, 96, 100] {
            let (q, k) = (randn(&mut rng, n), randn(&mut rng, n));
            let (mut rq, mut rk) = (q.clone(), k.clone());
            hadamard_in_place(&mut rq);
            hadamard_in_place(&mut rk);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
            assert!((dot(&q, &k) - dot(&rq, &rk)).abs() < 1e-4 * n as f32, "n={n}");
            hadamard_in_place(&mut rk);
            for (a, b) in rk.iter().zip(&k) {
                assert!((a - b).abs() < 1e-5, "n={n}: involution");
            }
        }
    }

    #[test]
    fn block_diagonal_chunks_stay_separate() {
        // 40 = 32 + 8: a spike in the last 8 values never leaks into the first 32.
        let mut x = vec![0.0f32; 40];
        x[35] = 3.0;
        hadamard_in_place(&mut x);
        assert!(x[..32].iter().all(|&v| v == 0.0));
        assert!(
            x[32..]
                .iter()
                .all(|&v| (v.abs() - 3.0 / 8f32.sqrt()).abs() < 1e-6)
        );
    }
}
