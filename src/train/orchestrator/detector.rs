//! What the loss says about a run: spikes against a running mean, and plateaus.
//!
//! ```text
//! spike at step t:  loss_t > k · ema_{t−1}         ema_t = 0.9 · ema_{t−1} + 0.1 · loss_t
//! plateau:          over the last W losses, (mean(first half) − mean(second half)) / mean(first half) < 0.5 %
//! ```
//! with `k = max_loss_increase` (1.5) and `W = decision_interval / 2` (at least 20, at most 400).
//! A spike is not folded into the mean at full weight (it would hide the next one): it enters
//! as `k · ema`, the highest loss that is not a spike.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The run's state as the seed names it (its UNSTABLE / PLATEAU / healthy phases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The loss falls and does not spike.
    Healthy,
    /// The loss spiked since the last decision.
    Unstable,
    /// The loss stopped falling.
    Plateau,
}

/// Spike and plateau detection over the training loss; saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    factor: f64,
    window: usize,
    ema: Option<f64>,
    recent: VecDeque<f64>,
    /// Spikes since the last decision.
    pub spikes: usize,
}

impl Detector {
    pub fn new(max_loss_increase: f64, decision_interval: usize) -> Self {
        Self {
            factor: max_loss_increase,
            window: (decision_interval / 2).clamp(20, 400),
            ema: None,
            recent: VecDeque::new(),
            spikes: 0,
        }
    }

    /// Take a step's loss; returns whether it spiked.
    pub fn observe(&mut self, loss: f64) -> bool {
        let spike = self.ema.is_some_and(|m| loss > self.factor * m);
        let folded = match self.ema {
            Some(m) if spike => self.factor * m,
            _ => loss,
        };
        self.ema = Some(self.ema.map_or(folded, |m| 0.9 * m + 0.1 * folded));
        self.spikes += usize::from(spike);
        self.recent.push_back(loss);
        if self.recent.len() > self.window {
            self.recent.pop_front();
        }
        spike
    }

    pub fn phase(&self) -> Phase {
        if self.spikes > 0 {
            Phase::Unstable
        } else if self.plateaued() {
            Phase::Plateau
        } else {
            Phase::Healthy
        }
    }

    fn plateaued(&self) -> bool {
        if self.recent.len() < self.window {
            return false;
        }
        let half = self.window / 2;
        let mean = |it: &mut dyn Iterator<Item = &f64>, n: usize| it.sum::<f64>() / n as f64;
        let first = mean(&mut self.recent.iter().take(half), half);
        let second = mean(&mut self.recent.iter().skip(half), self.window - half);
        (first - second) / first.abs().max(1e-12) < 0.005
    }

    /// Forget the spikes and the loss window after a decision (the new strategy starts clean; the
    /// running mean stays, so the next spike is judged against the loss level reached).
    pub fn reset_after_decision(&mut self) {
        self.spikes = 0;
        self.recent.clear();
    }

    /// The running mean of the loss.
    pub fn mean(&self) -> Option<f64> {
        self.ema
    }
}

/// Spikes in a candidate's losses, judged as the detector judges the run, starting from `mean`.
pub fn count_spikes(losses: &[f64], factor: f64, mean: Option<f64>) -> usize {
    let mut d = Detector::new(factor, 40);
    d.ema = mean;
    losses.iter().filter(|&&l| d.observe(l)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_over_the_running_mean_is_a_spike_and_a_flat_window_a_plateau() {
        let mut d = Detector::new(1.5, 40);
        for i in 0..20 {
            assert!(!d.observe(4.0 - 0.05 * i as f64));
        }
        assert_eq!(d.phase(), Phase::Healthy);
        // ema ≈ 3.2 here; 6.0 > 1.5 · 3.2
        assert!(d.observe(6.0));
        assert_eq!((d.spikes, d.phase()), (1, Phase::Unstable));
        // the spike entered the mean as 1.5 · ema, so a second jump right after still counts
        assert!(d.observe(6.0));
        d.reset_after_decision();
        for _ in 0..20 {
            d.observe(3.0);
        }
        assert_eq!(d.phase(), Phase::Plateau);
        assert_eq!(count_spikes(&[3.0, 3.1, 9.0, 3.0], 1.5, Some(3.0)), 1);
    }
}
