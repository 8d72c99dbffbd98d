//! Memory a training run needs at the least, estimated from the specs alone, and the compile-time
//! refusal of runs that cannot fit in this machine's memory.
//!
//! The estimate is a lower bound, so that it refuses only what cannot run: f32 weights,
//! gradients and optimizer state (AdamW two moments, Lion and SGD one), plus the activations a
//! step keeps for its backward pass — one value per token for every output feature of every
//! layer, and the logits — at the run's dtype. Attention scores, temporaries and allocator
//! slack come on top. CPU runs must fit in this machine's memory; runs on an accelerator only
//! below [`ANY_MACHINE`] (the GPU box is often not the one that compiles). Without this check a manifest whose sizes each pass validation
//! (`d_model: 16777216`, `batch_size: 1000000000`) allocates until the process aborts.

use serde::{Deserialize, Serialize};

use super::stats::ModelStats;
use crate::layer::EmbedderSpec;
use crate::manifest::Manifest;
use crate::manifest::error::Problem;
use crate::manifest::load::{Source, join_index, join_key};
use crate::model::ModelSpec;
use crate::topology::NodeSpec;
use crate::train::{OptimizerKind, TrainSpec};

/// Bytes a training run needs at the least (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingMemory {
    /// f32 weights.
    pub weights: u64,
    /// f32 gradients.
    pub gradients: u64,
    /// f32 optimizer state.
    pub optimizer: u64,
    /// Activations kept for the backward pass of one micro-batch.
    pub activations: u64,
}

impl TrainingMemory {
    /// The estimate for `model` trained with `train` on sequences of `block_size` tokens.
    pub fn estimate(model: &ModelSpec, train: &TrainSpec, block_size: usize) -> Self {
        let params = ModelStats::of(model).params;
        let f32_bytes = params.saturating_mul(4);
        let moments = match train.optimizer {
            // SWATS: Adam's two moments until the switch, one momentum buffer after it.
            OptimizerKind::Adamw | OptimizerKind::Swats => 2,
            OptimizerKind::Lion | OptimizerKind::Sgd => 1,
            // PIDAO: the integral, the derivative EMA and the previous gradient.
            OptimizerKind::Pidao => 3,
        };
        let vocab = match &model.embedder {
            EmbedderSpec::Token { vocab_size, .. } => *vocab_size as u64,
            EmbedderSpec::None => 0,
        };
        let per_token = features(&model.topology).saturating_add(vocab);
        let value_bytes = if matches!(train.dtype.as_str(), "f16" | "bf16") {
            2
        } else {
            4
        };
        let tokens = (train.batch_size as u64).saturating_mul(block_size as u64);
        Self {
            weights: f32_bytes,
            gradients: f32_bytes,
            optimizer: f32_bytes.saturating_mul(moments),
            activations: tokens.saturating_mul(per_token).saturating_mul(value_bytes),
        }
    }

    /// All of it.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.gradients)
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
    }

    /// Weights, gradients and optimizer state (what does not depend on the batch).
    pub fn state(&self) -> u64 {
        self.weights
            .saturating_add(self.gradients)
            .saturating_add(self.optimizer)
    }
}

/// Output features per token of every layer under `node` (children counted `repeat` times).
fn features(node: &NodeSpec) -> u64 {
    match node {
        NodeSpec::Attention(a) => {
            let q = a.n_heads.saturating_mul(a.head_dim()) as u64;
            // q, k, v and the output projection.
            q.saturating_mul(3).saturating_add(a.d_model as u64)
        }
        NodeSpec::RmsNorm(n) => n.d_model as u64,
        NodeSpec::LayerNorm(n) => n.d_model as u64,
        NodeSpec::SwiGlu(s) => (s.d_ff as u64).saturating_mul(3).saturating_add(s.d_model as u64),
        NodeSpec::Linear(l) => l.d_out as u64,
        NodeSpec::Dropout(_) => 0,
        _ => match node.children() {
            Some((children, repeat)) => children
                .iter()
                .fold(0u64, |acc, c| acc.saturating_add(features(c)))
                .saturating_mul(repeat as u64),
            None => 0,
        },
    }
}

/// This machine's memory in bytes (`MemTotal` in `/proc/meminfo`), when it can be read.
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in GiB, for messages.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The most memory any one machine is assumed to have: 16 TiB (an 8-GPU H200 node has about
/// 1.1 TiB of GPU memory). Runs on an accelerator are checked against this, not this machine's
/// memory, because a manifest is often compiled on a smaller machine than the one that runs it.
pub const ANY_MACHINE: u64 = 16 << 40;

/// The memory a run on `device` can have: this machine's `host` memory for `cpu`, else
/// [`ANY_MACHINE`]; with a description for messages.
pub fn limit_for(device: &str, host: Option<u64>) -> (u64, String) {
    match host {
        Some(host) if device == "cpu" => (host, format!("this machine's {}", gib(host))),
        _ => (
            ANY_MACHINE,
            format!("{} (more than any one machine)", gib(ANY_MACHINE)),
        ),
    }
}

/// One problem for every run of `m` (validated) whose estimate exceeds its limit
/// ([`limit_for`] its device, given this machine's `host` memory): at the model when its
/// weights and optimizer state alone do not fit, else at the run's `batch_size`.
pub fn problems(m: &Manifest, src: &Source, host: Option<u64>) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, t) in m.targets.iter().enumerate() {
        let target = join_index("targets", m.written_index(i));
        let (model, model_path) = match (&t.model, &m.model) {
            (Some(own), _) => (own, join_key(&target, "model")),
            (None, Some(top)) => (top, "model".to_string()),
            (None, None) => continue,
        };
        let mut model_reported = false;
        for (j, run) in t.runs.iter().enumerate() {
            let est = TrainingMemory::estimate(model, &run.train, t.data.block_size());
            let (limit, machine) = limit_for(&run.train.device, host);
            if est.total() <= limit {
                continue;
            }
            let breakdown = format!(
                "weights {}, gradients {}, optimizer state {}, activations {}",
                gib(est.weights),
                gib(est.gradients),
                gib(est.optimizer),
                gib(est.activations)
            );
            if est.state() > limit {
                if !model_reported {
                    model_reported = true;
                    out.push(
                        src.problem(
                            &model_path,
                            format!(
                                "training this model needs at least {} ({breakdown}), more than {machine}",
                                gib(est.total()),
                            ),
                        )
                        .with_help("check the widths (d_model, d_ff, vocab_size) and `repeat:` counts"),
                    );
                }
            } else {
                let run_path = join_index(&join_key(&target, "runs"), j);
                out.push(
                    src.problem(
                        &join_key(&join_key(&run_path, "train"), "batch_size"),
                        format!(
                            "a step of batch_size {} × block_size {} needs at least {} ({breakdown}), \
                             more than {machine}",
                            run.train.batch_size,
                            t.data.block_size(),
                            gib(est.total()),
                        ),
                    )
                    .with_help("lower batch_size (raise grad_accum to keep the tokens per step)"),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::layer::{RmsNormSpec, SwiGluSpec};
    use crate::topology::TopologySpec;

    fn model(vocab: usize, d: usize, d_ff: usize, repeat: usize) -> ModelSpec {
        ModelSpec {
            kind: Default::default(),
            embedder: EmbedderSpec::Token {
                vocab_size: vocab,
                d_model: d,
            },
            topology: NodeSpec::Stacked(TopologySpec {
                layers: vec![
                    NodeSpec::RmsNorm(RmsNormSpec {
                        d_model: d,
                        eps: 1e-5,
                        elementwise_affine: true,
                    }),
                    NodeSpec::SwiGlu(SwiGluSpec {
                        d_model: d,
                        d_ff,
                        bias: false,
                    }),
                ],
                repeat,
            }),
            tied_embeddings: true,
        }
    }

    #[test]
    fn the_estimate_counts_state_and_activations() {
        let mut rng = rand::rng();
        let (vocab, d, d_ff) = (
            rng.random_range(2..300),
            rng.random_range(1..64),
            rng.random_range(1..64),
        );
        let repeat = rng.random_range(1..5);
        let m = model(vocab, d, d_ff, repeat);
        let train = TrainSpec {
            batch_size: 3,
            ..TrainSpec::default()
        };
        let est = TrainingMemory::estimate(&m, &train, 5);
        let params = (vocab * d + repeat * (d + 3 * d * d_ff)) as u64;
        assert_eq!(est.weights, 4 * params);
        assert_eq!(est.optimizer, 8 * params, "AdamW keeps two moments");
        let per_token = (repeat * (d + 3 * d_ff + d) + vocab) as u64;
        assert_eq!(est.activations, 15 * per_token * 4);
    }

    #[test]
    fn absurd_sizes_saturate_instead_of_overflowing() {
        let m = model(1 << 24, 1 << 24, 1 << 24, 10_000);
        let train = TrainSpec {
            batch_size: usize::MAX,
            ..TrainSpec::default()
        };
        let est = TrainingMemory::estimate(&m, &train, 1 << 24);
        assert_eq!(est.total(), u64::MAX);
    }
}
