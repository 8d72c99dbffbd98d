//! The components a target names besides its model: `system` (what is trained), `objective`
//! (its loss) and `metrics` (what is measured on held-out data). Each is a closed enum whose
//! names are the original's refs without their prefix (`system.mlp_classifier` is accepted too).
//!
//! ```yaml
//! system: mlp_classifier            # default: language_model
//! objective: classification_ce      # default: the system's own
//! metrics: [loss, accuracy, per_class_accuracy]
//! ```
//! Which combinations work is decided in one place, [`SystemKind::accepts`], which validation asks;
//! adding a system is a variant here plus its runner.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a target trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemKind {
    /// Token ids → next-token logits (the transformer LM every other preset trains).
    #[default]
    #[serde(alias = "system.language_model", alias = "transformer")]
    LanguageModel,
    /// A feature row → class logits through the topology (an MLP of linear and activation layers).
    #[serde(alias = "system.mlp_classifier")]
    MlpClassifier,
    /// An image row → class logits through a topology that starts with a `PatchEmbedLayer` and
    /// ends with a `PoolLayer` and the class head (a Vision Transformer).
    #[serde(alias = "system.vit")]
    Vit,
}

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    /// Mean cross-entropy of next-token logits.
    #[serde(alias = "objective.next_token_ce")]
    NextTokenCe,
    /// Mean cross-entropy of class logits against integer labels.
    #[serde(alias = "objective.classification_ce")]
    ClassificationCe,
}

/// A measurement on held-out data, reported in `metrics.json` and the run's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// The objective on the held-out split.
    Loss,
    /// Fraction of held-out rows whose arg-max class is the label.
    Accuracy,
    /// Accuracy within each class (with the confusion matrix).
    PerClassAccuracy,
}

/// The data kind a system reads (`type:` of `data:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Tokens,
    Supervised,
}

impl SystemKind {
    /// The objective when the target names none.
    pub fn default_objective(self) -> ObjectiveKind {
        match self {
            Self::LanguageModel => ObjectiveKind::NextTokenCe,
            Self::MlpClassifier | Self::Vit => ObjectiveKind::ClassificationCe,
        }
    }

    /// The metrics when the target names none.
    pub fn default_metrics(self) -> Vec<MetricKind> {
        match self {
            Self::LanguageModel => vec![MetricKind::Loss],
            Self::MlpClassifier | Self::Vit => {
                vec![
                    MetricKind::Loss,
                    MetricKind::Accuracy,
                    MetricKind::PerClassAccuracy,
                ]
            }
        }
    }

    /// The data kind this system reads.
    pub fn data_kind(self) -> DataKind {
        match self {
            Self::LanguageModel => DataKind::Tokens,
            Self::MlpClassifier | Self::Vit => DataKind::Supervised,
        }
    }

    /// Whether this system trains on `objective` and can measure `metric`.
    pub fn accepts(self, objective: ObjectiveKind, metric: Option<MetricKind>) -> bool {
        let objective_ok = objective == self.default_objective();
        let metric_ok = match (self, metric) {
            (_, None | Some(MetricKind::Loss)) => true,
            (Self::LanguageModel, Some(_)) => false,
            (Self::MlpClassifier | Self::Vit, Some(_)) => true,
        };
        objective_ok && metric_ok
    }

    /// Whether this is the default system (so that LM manifests serialize as they did).
    pub fn is_language_model(&self) -> bool {
        *self == Self::LanguageModel
    }

    /// Whether the system is a classifier (features → class logits).
    pub fn is_classifier(self) -> bool {
        matches!(self, Self::MlpClassifier | Self::Vit)
    }
}

impl fmt::Display for SystemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LanguageModel => "language_model",
            Self::MlpClassifier => "mlp_classifier",
            Self::Vit => "vit",
        })
    }
}

impl fmt::Display for ObjectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NextTokenCe => "next_token_ce",
            Self::ClassificationCe => "classification_ce",
        })
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loss => "loss",
            Self::Accuracy => "accuracy",
            Self::PerClassAccuracy => "per_class_accuracy",
        })
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tokens => "tokens",
            Self::Supervised => "npy_supervised",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_refs_parse_and_pairs_are_checked() {
        let s: SystemKind = serde_json::from_str("\"system.mlp_classifier\"").expect("alias");
        assert_eq!(s, SystemKind::MlpClassifier);
        assert!(s.accepts(ObjectiveKind::ClassificationCe, Some(MetricKind::Accuracy)));
        assert!(!s.accepts(ObjectiveKind::NextTokenCe, None));
        assert!(!SystemKind::LanguageModel.accepts(ObjectiveKind::NextTokenCe, Some(MetricKind::Accuracy)));
    }
}
