//! Learning-rate schedules: linear warmup, then cosine, linear or constant.
//!
//! For optimizer step `s` (0-based) of `total`, peak `lr`, `min = min_lr_ratio · lr`, `w` warmup steps:
//! ```text
//! s < w:        lr · (s + 1) / w
//! otherwise:    p = (s − w) / (total − w − 1), clamped to [0, 1] (p = 1 when total − w − 1 = 0)
//!   cosine:     min + (lr − min) · ½ · (1 + cos(π·p))
//!   linear:     lr − (lr − min) · p
//!   constant:   lr
//! ```
//! So the first post-warmup step runs at `lr` and the last step at `min`.

use super::spec::{ScheduleKind, TrainSpec};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub total: usize,
}

impl Schedule {
    pub fn new(spec: &TrainSpec, total: usize) -> Self {
        Self {
            kind: spec.schedule,
            lr: spec.lr,
            min_lr: spec.lr * spec.min_lr_ratio,
            warmup: spec.warmup_steps,
            total,
        }
    }

    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup + 1);
        let p = if span == 0 {
            1.0
        } else {
            ((step - self.warmup) as f64 / span as f64).clamp(0.0, 1.0)
        };
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Linear => self.lr - (self.lr - self.min_lr) * p,
            ScheduleKind::Cosine => {
                self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, warmup: usize, total: usize) -> Schedule {
        Schedule {
            kind,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup,
            total,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15
    }

    #[test]
    fn warmup_is_linear_up_to_the_peak() {
        let s = sched(ScheduleKind::Cosine, 4, 20);
        let lrs: Vec<f64> = (0..4).map(|i| s.lr(i)).collect();
        assert!(
            close(lrs[0], 2.5e-4) && close(lrs[1], 5e-4) && close(lrs[2], 7.5e-4) && close(lrs[3], 1e-3),
            "{lrs:?}"
        );
        assert!(close(s.lr(4), 1e-3), "first step after warmup is at the peak");
    }

    #[test]
    fn cosine_ends_at_min_and_passes_the_midpoint_halfway() {
        let s = sched(ScheduleKind::Cosine, 0, 11);
        assert!(close(s.lr(0), 1e-3));
        assert!(close(s.lr(5), 1e-4 + 0.9e-3 * 0.5), "{}", s.lr(5));
        assert!(close(s.lr(10), 1e-4));
        // cos(π·0.3) at p = 3/10
        let want = 1e-4 + 0.9e-3 * 0.5 * (1.0 + (std::f64::consts::PI * 0.3).cos());
        assert!(close(s.lr(3), want));
        assert!(close(s.lr(50), 1e-4), "past the end stays at min");
    }

    #[test]
    fn linear_and_constant() {
        let s = sched(ScheduleKind::Linear, 2, 12);
        assert!(close(s.lr(2), 1e-3));
        assert!(close(s.lr(7), 1e-3 - 0.9e-3 * 5.0 / 9.0));
        assert!(close(s.lr(11), 1e-4));
        let c = sched(ScheduleKind::Constant, 2, 12);
        assert!(close(c.lr(0), 5e-4));
        assert!((2..12).all(|i| c.lr(i) == 1e-3));
    }

    #[test]
    fn a_single_post_warmup_step_is_the_last_one() {
        let s = sched(ScheduleKind::Cosine, 3, 4);
        assert!(close(s.lr(3), 1e-4));
        let s = sched(ScheduleKind::Cosine, 0, 1);
        assert!(close(s.lr(0), 1e-4));
    }
}
