//! The forward context every node receives beside its hidden state.
//!
//! One signature for training, generation, tracing and distillation: `forward(xs, ctx)`.

use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

use crate::model::kv_cache::KvCache;

/// What a forward pass needs besides the hidden state.
pub struct ForwardCtx<'a> {
    /// Absolute position of the first token of `xs` (RoPE angle and causal-mask offset).
    pub pos_offset: usize,
    /// Training mode: dropout is active and only differentiable ops are used.
    pub train: bool,
    /// KV caches of the attention layers, indexed by each layer's slot. `None`: no caching.
    pub cache: Option<&'a mut KvCache>,
    /// Seeded RNG for dropout masks (candle's own RNG cannot be seeded on CPU).
    pub rng: Option<&'a mut ChaCha8Rng>,
    /// Sink for intermediate outputs (distillation, verification).
    pub trace: Option<&'a mut Trace>,
    /// Stop the forward pass after the attention layer with this slot (blockwise distillation
    /// needs nothing past the block it trains); later nodes pass their input through.
    pub stop_after_slot: Option<usize>,
    /// Set once `stop_after_slot` was reached.
    pub stopped: bool,
    /// Auxiliary losses (scalars, already weighted) pushed by layers during a training forward,
    /// e.g. a MoE layer's load-balancing loss; the trainer adds their sum to the training loss.
    pub aux_losses: Vec<Tensor>,
}

impl<'a> ForwardCtx<'a> {
    /// Evaluation context: no cache, no dropout, fused (non-differentiable) kernels allowed.
    pub fn eval() -> Self {
        Self {
            pos_offset: 0,
            train: false,
            cache: None,
            rng: None,
            trace: None,
            stop_after_slot: None,
            stopped: false,
            aux_losses: Vec::new(),
        }
    }

    /// Training context with a dropout RNG.
    pub fn train(rng: &'a mut ChaCha8Rng) -> Self {
        Self {
            pos_offset: 0,
            train: true,
            cache: None,
            rng: Some(rng),
            trace: None,
            stop_after_slot: None,
            stopped: false,
            aux_losses: Vec::new(),
        }
    }

    /// Decoding context over a cache, starting at `pos_offset`.
    pub fn cached(cache: &'a mut KvCache, pos_offset: usize) -> Self {
        Self {
            pos_offset,
            train: false,
            cache: Some(cache),
            rng: None,
            trace: None,
            stop_after_slot: None,
            stopped: false,
            aux_losses: Vec::new(),
        }
    }

    /// The sum of the auxiliary losses pushed so far; `None` when no layer pushed one.
    pub fn aux_loss(&self) -> candle_core::Result<Option<Tensor>> {
        let mut it = self.aux_losses.iter();
        let Some(first) = it.next() else {
            return Ok(None);
        };
        it.try_fold(first.clone(), |acc, l| acc + l).map(Some)
    }

    /// Called by attention layers after their forward: honours `stop_after_slot`.
    pub fn finished_slot(&mut self, slot: usize) {
        if self.stop_after_slot == Some(slot) {
            self.stopped = true;
        }
    }

    /// Record the input of the attention layer with `slot` when the trace captures it (the first
    /// time only: a cyclic topology runs a slot more than once).
    pub fn record_attention_input(&mut self, slot: usize, xs: &Tensor) {
        if let Some(trace) = self.trace.as_deref_mut() {
            let wanted = match trace.capture_inputs {
                CaptureInputs::None => false,
                CaptureInputs::Slot(s) => s == slot,
                CaptureInputs::All => true,
            };
            if wanted && !trace.inputs.iter().any(|(s, _)| *s == slot) {
                trace.inputs.push((slot, xs.clone()));
            }
        }
    }

    /// Record `xs` under `path` when a trace asks for this kind of node.
    pub fn record(&mut self, kind: TraceKind, path: &str, xs: &Tensor) {
        if let Some(trace) = self.trace.as_deref_mut() {
            if trace.wants(kind) {
                trace.entries.push((path.to_string(), xs.clone()));
            }
        }
    }
}

/// Which node outputs a [`Trace`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    Attention,
    Layer,
}

/// Named intermediate outputs collected during one forward pass.
#[derive(Debug, Default)]
pub struct Trace {
    /// Keep every layer's output, not only attention outputs.
    pub all_layers: bool,
    /// `(topology path, output)` in execution order.
    pub entries: Vec<(String, Tensor)>,
    /// Which attention layers' inputs to keep (blockwise distillation trains a layer on them).
    pub capture_inputs: CaptureInputs,
    /// `(slot, input)` of the captured attention layers, in execution order.
    pub inputs: Vec<(usize, Tensor)>,
}

/// Which attention inputs a [`Trace`] keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CaptureInputs {
    #[default]
    None,
    Slot(usize),
    All,
}

impl Trace {
    pub fn attention_only() -> Self {
        Self {
            all_layers: false,
            entries: Vec::new(),
            capture_inputs: CaptureInputs::None,
            inputs: Vec::new(),
        }
    }

    /// Attention outputs, plus the inputs of the attention layers `capture` names.
    pub fn with_inputs(capture: CaptureInputs) -> Self {
        Self {
            capture_inputs: capture,
            ..Self::attention_only()
        }
    }

    fn wants(&self, kind: TraceKind) -> bool {
        self.all_layers || kind == TraceKind::Attention
    }
}
