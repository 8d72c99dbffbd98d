//! The strategy portfolio: an optimizer family with its hyper-parameters, an lr ratio and a
//! clipping rule, switched between by the orchestrator. The seed's five bundles, with their lrs
//! kept as ratios of one base lr (the seed's absolute lrs over its `portfolio_base_lr` 1e-4) so
//! that they scale with the model a manifest trains, plus `as_written`: the `train:` block itself.
//!
//! | strategy | optimizer | lr × base | clipping |
//! |---|---|---|---|
//! | conservative_adamw | AdamW, wd 0.01 | 0.1 | global norm 0.5 |
//! | aggressive_adamw | AdamW | 5 | global norm 1.0 |
//! | sgd_escape | SGD, momentum 0.9 | 10 | global norm 1.0 |
//! | spike_resistant | AdamW | 1 | AdaGC (β 0.99), else global norm 0.5 |
//! | lion_conservative | Lion, betas (0.9, 0.99) | 1 | global norm 0.5 |
//! | as_written | the block's | 1 | the block's `grad_clip` |

use serde::{Deserialize, Serialize};

use crate::train::clip::GradClip;
use crate::train::spec::{AdaGcSpec, ClipKind, OptimizerKind, TrainSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    ConservativeAdamw,
    AggressiveAdamw,
    SgdEscape,
    SpikeResistant,
    LionConservative,
    AsWritten,
}

/// The seed's portfolio in its order (ties in a decision go to the earlier one).
pub const PORTFOLIO: [StrategyName; 5] = [
    StrategyName::ConservativeAdamw,
    StrategyName::AggressiveAdamw,
    StrategyName::SgdEscape,
    StrategyName::SpikeResistant,
    StrategyName::LionConservative,
];

/// How gradients are bounded before the update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clipping {
    /// Global-norm clipping at this norm (0: none).
    GlobalNorm(f64),
    /// Per-parameter adaptive clipping with this EMA β (see `train::adagc`).
    Adaptive { beta: f64 },
}

/// One strategy, resolved against a run's `train:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    pub name: StrategyName,
    /// The optimizer settings (kind, betas, weight decay, momentum) as a `train:` block.
    pub spec: TrainSpec,
    /// Multiplies the run's schedule (whose peak is the block's `lr`).
    pub lr_scale: f64,
    pub clipping: Clipping,
}

impl StrategyName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConservativeAdamw => "conservative_adamw",
            Self::AggressiveAdamw => "aggressive_adamw",
            Self::SgdEscape => "sgd_escape",
            Self::SpikeResistant => "spike_resistant",
            Self::LionConservative => "lion_conservative",
            Self::AsWritten => "as_written",
        }
    }

    /// Favoured when the loss spikes (the seed's UNSTABLE multiplier applies).
    pub fn calms(self) -> bool {
        matches!(self, Self::ConservativeAdamw | Self::SpikeResistant)
    }

    /// Favoured on a plateau (the seed's PLATEAU multiplier applies).
    pub fn escapes(self) -> bool {
        matches!(self, Self::SgdEscape | Self::AggressiveAdamw)
    }

    /// This strategy for a run trained by `block`, its lrs relative to `base_lr`.
    pub fn resolve(self, block: &TrainSpec, base_lr: f64, use_adagc: bool) -> Strategy {
        let ratio = base_lr / block.lr;
        let with = |optimizer, weight_decay: Option<f64>| TrainSpec {
            optimizer,
            weight_decay: weight_decay.unwrap_or(block.weight_decay),
            ..block.clone()
        };
        let (spec, lr, clipping) = match self {
            Self::ConservativeAdamw => (
                with(OptimizerKind::Adamw, Some(0.01)),
                0.1,
                Clipping::GlobalNorm(0.5),
            ),
            Self::AggressiveAdamw => (with(OptimizerKind::Adamw, None), 5.0, Clipping::GlobalNorm(1.0)),
            Self::SgdEscape => (
                TrainSpec {
                    momentum: 0.9,
                    ..with(OptimizerKind::Sgd, None)
                },
                10.0,
                Clipping::GlobalNorm(1.0),
            ),
            Self::SpikeResistant => (
                with(OptimizerKind::Adamw, None),
                1.0,
                if use_adagc {
                    Clipping::Adaptive { beta: 0.99 }
                } else {
                    Clipping::GlobalNorm(0.5)
                },
            ),
            Self::LionConservative => (
                TrainSpec {
                    betas: [0.9, 0.99],
                    ..with(OptimizerKind::Lion, None)
                },
                1.0,
                Clipping::GlobalNorm(0.5),
            ),
            Self::AsWritten => {
                return Strategy {
                    name: self,
                    spec: block.clone(),
                    lr_scale: 1.0,
                    clipping: match block.clip {
                        ClipKind::Global => Clipping::GlobalNorm(block.grad_clip),
                        ClipKind::Adagc => Clipping::Adaptive {
                            beta: block.adagc.beta,
                        },
                    },
                };
            }
        };
        Strategy {
            name: self,
            spec,
            lr_scale: lr * ratio,
            clipping,
        }
    }
}

impl Strategy {
    /// The clipper this strategy trains with (AdaGC starts fresh: 10 steps of global clipping at
    /// 0.5 while its averages fill, not the block's `adagc.warmup`, so that it clips per tensor
    /// within a branch's horizon).
    pub fn grad_clip(&self) -> GradClip {
        match self.clipping {
            Clipping::GlobalNorm(max_norm) => GradClip::Global { max_norm },
            Clipping::Adaptive { beta } => GradClip::new(&TrainSpec {
                clip: ClipKind::Adagc,
                grad_clip: 0.5,
                adagc: AdaGcSpec {
                    beta,
                    warmup: 10,
                    ..self.spec.adagc
                },
                ..self.spec.clone()
            }),
        }
    }

    /// Whether switching from `other` keeps the optimizer's state (same family and settings: the
    /// seed warm-starts same-family candidates from the current moments).
    pub fn shares_state_with(&self, other: &Strategy) -> bool {
        let key = |s: &TrainSpec| (s.optimizer, s.betas, s.eps.to_bits(), s.momentum.to_bits());
        key(&self.spec) == key(&other.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_follow_the_base_lr_and_as_written_is_the_block() {
        let block = TrainSpec {
            lr: 2e-3,
            grad_clip: 0.7,
            ..TrainSpec::default()
        };
        let c = StrategyName::ConservativeAdamw.resolve(&block, 1e-3, true);
        // 0.1 × base 1e-3 = 1e-4 = 0.05 × the block's 2e-3.
        assert!((c.lr_scale - 0.05).abs() < 1e-12);
        assert_eq!(c.clipping, Clipping::GlobalNorm(0.5));
        assert_eq!(c.spec.weight_decay, 0.01);
        let w = StrategyName::AsWritten.resolve(&block, 1e-3, true);
        assert_eq!((w.lr_scale, w.clipping), (1.0, Clipping::GlobalNorm(0.7)));
        assert_eq!(w.spec, block);
        let s = StrategyName::SpikeResistant.resolve(&block, 2e-3, false);
        assert_eq!(s.clipping, Clipping::GlobalNorm(0.5));
        assert!(s.shares_state_with(&StrategyName::AggressiveAdamw.resolve(&block, 2e-3, true)));
        let lion = StrategyName::LionConservative.resolve(&block, 2e-3, true);
        assert!(!lion.shares_state_with(&s));
    }

    #[test]
    fn names_round_trip_through_the_manifest_spelling() {
        for n in PORTFOLIO.into_iter().chain([StrategyName::AsWritten]) {
            let parsed: StrategyName = serde_json::from_value(serde_json::json!(n.as_str())).expect("name");
            assert_eq!(parsed, n);
        }
        assert!(serde_json::from_value::<StrategyName>(serde_json::json!("adam")).is_err());
    }
}
