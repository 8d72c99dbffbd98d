//! The training loop: next-token cross-entropy, gradient accumulation, global-norm clipping, the
//! lr schedule, `metrics.jsonl`, periodic eval on the val split, atomic checkpoints and exact
//! resume from the newest complete one.
//!
//! Randomness has three seeded ChaCha8 streams derived from the run seed (`seed_for(seed, "data")`,
//! `"dropout"`, `"eval"`); the first two are saved in checkpoints, the eval stream restarts at
//! every eval so each eval sees the same validation batches. On CPU a run is bit-for-bit
//! repeatable for a seed and thread count, and a resumed run continues bit-identically.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{self, CheckpointState, FORMAT};
use super::clip::clip_grad_norm;
use super::error::TrainError;
use super::metrics::{EvalLine, MetricLine, MetricsLog, TrainLine};
use super::optimizer::Optimizer;
use super::schedule::Schedule;
use super::spec::TrainSpec;
use crate::console::Progress;
use crate::data::{BatchSampler, SamplerState, Split, TokenDataset};
use crate::model::init::seed_for;
use crate::model::{ForwardCtx, LanguageModel, ModelSpec, SeededVarMap};

/// Set by the Ctrl-C / SIGTERM handler; checked after every step.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long to train and where to keep the record.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Optimizer steps of the whole run (the schedule's length).
    pub steps: usize,
    /// Run seed: weights (through `SeededVarMap`), batches, dropout, eval batches.
    pub seed: u64,
    /// Holds `metrics.jsonl` and `checkpoints/`.
    pub run_dir: PathBuf,
    /// Ignore (and delete) existing checkpoints and metrics instead of resuming.
    pub fresh: bool,
    /// Identifies the manifest; resuming from a checkpoint with another one is an error.
    /// See [`fingerprint`].
    pub fingerprint: String,
    /// Stop (with a checkpoint) after this many completed steps, though the schedule spans
    /// `steps`; a later call resumes. Default: none.
    pub stop_after: Option<usize>,
    /// Train only the parameters whose names start with one of these prefixes; the others stay
    /// as they are and the optimizer holds no state for them. `None`: every parameter (buffers
    /// never train). Build the model over detached copies of the frozen ones so that backward
    /// skips their gradients too. Default: none.
    pub train_only: Option<Vec<String>>,
}

impl TrainOptions {
    /// Options with the fingerprint of `(model, spec)`, no early stop, resuming when possible.
    pub fn new(
        model: &ModelSpec,
        spec: &TrainSpec,
        steps: usize,
        seed: u64,
        run_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            steps,
            seed,
            run_dir: run_dir.into(),
            fresh: false,
            fingerprint: fingerprint(model, spec),
            stop_after: None,
            train_only: None,
        }
    }
}

/// What a run achieved (this call; `steps` counts from the run's start).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Completed optimizer steps.
    pub steps: usize,
    /// Train loss of the last step.
    pub final_loss: f64,
    /// Last eval loss on the val split (`None` without a val split or with `eval_every: 0`).
    pub val_loss: Option<f64>,
    /// Training tokens per second over this call (step time only: eval and checkpoints excluded).
    pub tokens_per_sec: f64,
    /// Wall time of this call's training loop (seconds).
    pub wall_time_s: f64,
    /// The checkpoint step this call resumed from.
    pub resumed_from: Option<usize>,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
}

/// FNV-1a (hex) of the JSON of the model and train specs: a stable manifest fingerprint. Settings
/// that do not change the trained weights (device, logging, eval and checkpoint cadence, the attention
/// kernels) are left out, so a run can be resumed on another device or with other logging.
pub fn fingerprint(model: &ModelSpec, spec: &TrainSpec) -> String {
    let weights_only = TrainSpec {
        device: String::new(),
        log_every: 0,
        eval_every: 0,
        eval_iters: 0,
        save_every: None,
        keep_checkpoints: 0,
        fused: true,
        instrument: Vec::new(),
        ..spec.clone()
    };
    let text = serde_json::to_string(&(model, &weights_only)).expect("specs serialize to JSON");
    format!("{:016x}", seed_for(0, &text))
}

/// `cpu`, `cuda`, `cuda:N`, `metal` (see [`crate::device::parse_device`]).
pub fn parse_device(name: &str) -> Result<Device, TrainError> {
    crate::device::parse_device(name).map_err(|e| TrainError::BadSpec {
        field: "device",
        reason: e.to_string(),
    })
}

/// `auto` (bf16 on CUDA, f32 elsewhere), `f32`, `bf16`, `f16`, `f64`.
pub fn parse_dtype(name: &str, device: &Device) -> Result<DType, TrainError> {
    crate::device::resolve_dtype(name, device).map_err(|e| TrainError::BadSpec {
        field: "dtype",
        reason: e.to_string(),
    })
}

/// Build the model of `model` with seeded weights on `spec`'s device and dtype, and train it.
pub fn run(
    model: &ModelSpec,
    spec: &TrainSpec,
    data: &TokenDataset,
    opts: TrainOptions,
) -> Result<TrainSummary, TrainError> {
    let device = parse_device(&spec.device)?;
    let dtype = parse_dtype(&spec.dtype, &device)?;
    let vars = SeededVarMap::new(opts.seed);
    let lm = LanguageModel::build(model, vars.var_builder(dtype, &device))?;
    Trainer::new(lm, vars, spec, data, opts)?.run()
}

/// Next-token cross-entropy of logits (b, t, vocab) against targets (b, t): the mean over b·t of
/// −log softmax(logits)[target], in f32.
pub fn lm_loss(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    // why: one op over the logits in their own dtype that keeps only each row's logsumexp for
    // backward (on CUDA two fused kernels), instead of an f32 copy and an f32 log-softmax of the
    // (b·t, vocab) logits — a step's largest tensors.
    crate::ops::cross_entropy::cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)
}

/// A training loss from (input ids (b, t), logits (b, t, vocab), targets (b, t)) to a scalar.
pub type LossFn<'a> = Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor> + 'a>;

/// A model, its variables and a dataset, ready to train.
pub struct Trainer<'a> {
    model: LanguageModel,
    vars: SeededVarMap,
    spec: TrainSpec,
    data: &'a TokenDataset,
    opts: TrainOptions,
    device: Device,
    interrupt: Arc<AtomicBool>,
    loss: Option<LossFn<'a>>,
}

impl<'a> Trainer<'a> {
    /// Check the settings against the model and data. `vars` must be the map `model` was built on.
    pub fn new(
        model: LanguageModel,
        vars: SeededVarMap,
        spec: &TrainSpec,
        data: &'a TokenDataset,
        opts: TrainOptions,
    ) -> Result<Self, TrainError> {
        let bad = |field, reason: &str| {
            Err(TrainError::BadSpec {
                field,
                reason: reason.into(),
            })
        };
        if spec.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if spec.grad_accum == 0 {
            return bad("grad_accum", "must be at least 1");
        }
        if !(spec.lr.is_finite() && spec.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if spec.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return bad("betas", "each must be in [0, 1)");
        }
        if opts.steps == 0 {
            return Err(TrainError::BadSpec {
                field: "steps",
                reason: "must be at least 1".into(),
            });
        }
        let Some(model_vocab) = model.vocab_size() else {
            return bad(
                "model",
                "training needs a token embedder (next-token loss over a vocabulary)",
            );
        };
        if data.vocab() > model_vocab {
            return Err(TrainError::VocabMismatch {
                data_vocab: data.vocab(),
                model_vocab,
            });
        }
        let device = vars
            .named_vars()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        Ok(Self {
            model,
            vars,
            spec: spec.clone(),
            data,
            opts,
            device,
            interrupt: Arc::new(AtomicBool::new(false)),
            loss: None,
        })
    }

    /// Train on `loss` instead of next-token cross-entropy (e.g. distillation to a teacher's
    /// logits computed on the same batch). Eval stays cross-entropy.
    pub fn with_loss(mut self, loss: LossFn<'a>) -> Self {
        self.loss = Some(loss);
        self
    }

    /// A flag that, once set, makes the loop checkpoint after the current step and return
    /// [`TrainError::Interrupted`] (Ctrl-C sets a global one with the same effect).
    pub fn interrupt_handle(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst) || INTERRUPTED.load(Ordering::SeqCst)
    }

    /// Train to `opts.steps` (or `opts.stop_after`), resuming from the newest complete checkpoint.
    pub fn run(self) -> Result<TrainSummary, TrainError> {
        install_ctrlc();
        INTERRUPTED.store(false, Ordering::SeqCst);
        let (spec, opts) = (&self.spec, &self.opts);
        let run_dir = opts.run_dir.as_path();
        // why: two processes on one run directory would prune and rewrite each other's record.
        let _lock = crate::record::DirLock::acquire(run_dir)?;
        let ck_root = run_dir.join("checkpoints");
        checkpoint::remove_stale_temps(&ck_root)?;

        let trains = |name: &str| {
            !crate::model::init::is_buffer(name)
                && opts
                    .train_only
                    .as_ref()
                    .is_none_or(|prefixes| prefixes.iter().any(|p| name.starts_with(p.as_str())))
        };
        let trainable: Vec<_> = self
            .vars
            .named_vars()
            .into_iter()
            .filter(|(n, _)| trains(n))
            .collect();
        if trainable.is_empty() {
            return Err(TrainError::BadSpec {
                field: "train_only",
                reason: "no parameter matches; nothing would train".into(),
            });
        }
        crate::kernels::set_fused_training(spec.fused);
        let dtype = trainable[0].1.dtype();
        tracing::info!(
            "attention: {}",
            crate::kernels::flash_attention::training_path(&self.device, dtype)
        );
        let mut optimizer = Optimizer::new(spec, trainable)?;
        let mut sampler = BatchSampler::new(seed_for(opts.seed, "data"));
        let mut dropout = ChaCha8Rng::seed_from_u64(seed_for(opts.seed, "dropout"));
        let resumed = if opts.fresh {
            if ck_root.exists() {
                tracing::warn!("--fresh: removing old checkpoints in {}", ck_root.display());
                std::fs::remove_dir_all(&ck_root).map_err(|e| TrainError::io(&ck_root, e))?;
            }
            None
        } else {
            self.resume(&ck_root, &mut optimizer)?
        };
        let (start, mut elapsed_before, mut tokens_seen, mut loss) = match &resumed {
            Some(s) => {
                sampler = BatchSampler::restore(s.data);
                dropout.set_word_pos(s.dropout_word_pos);
                tracing::info!("resuming from step {} ({})", s.step, ck_root.display());
                (s.step, s.elapsed_s, s.tokens_seen, s.loss)
            }
            None => (0, 0.0, 0, f64::NAN),
        };
        let resumed_from = resumed.as_ref().map(|s| s.step);
        let mut metrics = MetricsLog::open(run_dir, resumed_from)?;

        let end = opts.stop_after.map_or(opts.steps, |s| s.min(opts.steps));
        let schedule = Schedule::new(spec, opts.steps);
        let tokens_per_step = (spec.batch_size * spec.grad_accum * self.data.block_size()) as u64;
        let save_every = spec.save_every.unwrap_or(100);
        let progress = Progress::new(opts.steps as u64, "train");
        progress.set_position(start as u64);
        let vars = optimizer.vars().to_vec();
        let t0 = Instant::now();
        // why: throughput counts step time only (not eval or checkpoint writes).
        let (mut window_secs, mut window_tokens, mut train_secs) = (0f64, 0u64, 0f64);
        let (mut val_loss, mut last_checkpoint) = (None, None);
        let mut clock = super::phase_clock::PhaseClock::from_env(&self.device);

        let profiled_step = crate::device::profiled_step();
        for step in start..end {
            let profiling = profiled_step == Some(step + 1);
            if profiling {
                crate::device::cuda_profiler(&self.device, true);
            }
            clock.start();
            let step_start = Instant::now();
            let lr = schedule.lr(step);
            let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
            let mut loss_sum = 0f64;
            let (mut aux_sum, mut has_aux) = (0f64, false);
            for _ in 0..spec.grad_accum {
                let (xs, ys) = self
                    .data
                    .batch(Split::Train, spec.batch_size, &mut sampler, &self.device)?;
                clock.lap("data");
                let failed = |phase| in_phase(step + 1, phase, &self.device, spec.batch_size);
                let (step_loss, aux) = {
                    let mut ctx = ForwardCtx::train(&mut dropout);
                    let logits = self.model.forward(&xs, &mut ctx).map_err(failed("forward"))?;
                    let loss = match &self.loss {
                        Some(loss) => loss(&xs, &logits, &ys),
                        None => lm_loss(&logits, &ys),
                    }
                    .map_err(failed("loss"))?;
                    (loss, ctx.aux_loss().map_err(failed("auxiliary loss"))?)
                };
                let value = f64::from(step_loss.to_scalar::<f32>().map_err(failed("forward"))?);
                // why: `loss` stays the model's own loss (comparable with models without
                // auxiliary losses); the weighted auxiliary sum is logged beside it.
                let step_loss = match aux {
                    Some(aux) => {
                        let aux_value = aux.to_dtype(DType::F32).and_then(|a| a.to_scalar::<f32>());
                        aux_sum += f64::from(aux_value.map_err(failed("forward"))?);
                        has_aux = true;
                        let aux = aux.to_dtype(step_loss.dtype()).map_err(failed("loss"))?;
                        (step_loss + aux).map_err(failed("loss"))?
                    }
                    None => step_loss,
                };
                clock.lap("forward");
                if !value.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: step + 1,
                        loss: value,
                    });
                }
                loss_sum += value;
                let scaled = if spec.grad_accum > 1 {
                    (step_loss / spec.grad_accum as f64)?
                } else {
                    step_loss
                };
                let store = scaled.backward().map_err(failed("backward"))?;
                clock.lap("backward");
                super::gradients::detached_f32(&store, &vars)
                    .and_then(|more| super::gradients::accumulate(&mut grads, more))
                    .map_err(failed("gathering gradients"))?;
            }
            clock.lap("gather grads");
            loss = loss_sum / spec.grad_accum as f64;
            let failed = |phase| in_phase(step + 1, phase, &self.device, spec.batch_size);
            let grad_norm = clip_grad_norm(&mut grads, spec.grad_clip).map_err(failed("clipping"))?;
            clock.lap("clip");
            if !grad_norm.is_finite() {
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    loss: grad_norm,
                });
            }
            optimizer.step(&grads, lr).map_err(failed("optimizer"))?;
            clock.lap("optimizer");
            drop(grads);
            if profiling {
                crate::device::cuda_profiler(&self.device, false);
            }
            crate::device::trim_memory_pool(&self.device);
            let done = step + 1;
            tokens_seen += tokens_per_step;
            window_tokens += tokens_per_step;
            let step_secs = step_start.elapsed().as_secs_f64();
            (window_secs, train_secs) = (window_secs + step_secs, train_secs + step_secs);
            let elapsed = elapsed_before + t0.elapsed().as_secs_f64();

            let log_due = (spec.log_every > 0 && done % spec.log_every == 0) || done == end;
            if log_due {
                let tokens_per_sec = window_tokens as f64 / window_secs.max(1e-9);
                (window_secs, window_tokens) = (0.0, 0);
                let memory_gib = crate::device::memory_in_use_bytes(&self.device).map(gib);
                metrics.write(&MetricLine::Train(TrainLine {
                    step: done,
                    loss,
                    lr,
                    grad_norm,
                    tokens_per_sec,
                    elapsed_s: elapsed,
                    memory_gib,
                    aux_loss: has_aux.then(|| aux_sum / spec.grad_accum as f64),
                }))?;
                let memory = memory_line(&self.device, memory_gib);
                tracing::info!(
                    step = done,
                    loss = format!("{loss:.4}"),
                    lr = format!("{lr:.3e}"),
                    grad_norm = format!("{grad_norm:.3}"),
                    tok_per_s = format!("{tokens_per_sec:.0}"),
                    "train{memory}"
                );
                progress.set_message(&format!("loss {loss:.4} · {tokens_per_sec:.0} tok/s"));
            }
            progress.set_position(done as u64);

            let eval_due = spec.eval_every > 0 && (done % spec.eval_every == 0 || done == end);
            if eval_due && self.data.has_val() {
                let v = self.evaluate()?;
                val_loss = Some(v);
                metrics.write(&MetricLine::Eval(EvalLine {
                    step: done,
                    val_loss: v,
                    elapsed_s: elapsed,
                    val_accuracy: None,
                }))?;
                tracing::info!(step = done, val_loss = format!("{v:.4}"), "eval");
            }

            let interrupted = self.interrupted();
            if (save_every > 0 && done % save_every == 0) || done == end || interrupted {
                let state = CheckpointState {
                    format: FORMAT,
                    step: done,
                    total_steps: opts.steps,
                    seed: opts.seed,
                    fingerprint: opts.fingerprint.clone(),
                    optimizer: optimizer.kind().into(),
                    data: sampler.state(),
                    dropout_word_pos: dropout.get_word_pos(),
                    elapsed_s: elapsed_before + t0.elapsed().as_secs_f64(),
                    tokens_seen,
                    loss,
                    extra: serde_json::Value::Null,
                    files: Default::default(),
                };
                // why: all variables, not only the trained ones, so the file is a complete model.
                let all_vars = self.vars.named_vars();
                let dir = checkpoint::save(&ck_root, &state, &all_vars, &optimizer, spec.keep_checkpoints)?;
                tracing::debug!("checkpoint {}", dir.display());
                last_checkpoint = Some(dir);
            }
            if interrupted {
                let checkpoint = last_checkpoint.clone().expect("a checkpoint was just written");
                return Err(TrainError::Interrupted {
                    step: done,
                    checkpoint,
                });
            }
        }
        clock.report();
        let wall = t0.elapsed().as_secs_f64();
        elapsed_before += wall;
        tracing::info!(
            steps = end,
            loss = format!("{loss:.4}"),
            elapsed_s = format!("{elapsed_before:.1}"),
            "training done"
        );
        let trained = (end.saturating_sub(start) as u64) * tokens_per_step;
        Ok(TrainSummary {
            steps: end.max(start),
            final_loss: loss,
            val_loss,
            tokens_per_sec: trained as f64 / train_secs.max(1e-9),
            wall_time_s: wall,
            resumed_from,
            checkpoint: last_checkpoint.or_else(|| checkpoint::latest_complete(&ck_root).map(|c| c.dir)),
        })
    }

    /// Load the newest loadable checkpoint; skips unreadable or corrupt ones with a warning, and
    /// refuses (rather than start over) when there are checkpoints but none is readable.
    fn resume(
        &self,
        ck_root: &Path,
        optimizer: &mut Optimizer,
    ) -> Result<Option<CheckpointState>, TrainError> {
        let candidates = checkpoint::resumable(ck_root)?;
        let mut first_error = None;
        for ck in &candidates {
            if ck.state.fingerprint != self.opts.fingerprint {
                return Err(TrainError::FingerprintMismatch {
                    dir: ck.dir.clone(),
                    found: ck.state.fingerprint.clone(),
                    expected: self.opts.fingerprint.clone(),
                });
            }
            match ck
                .verify()
                .and_then(|()| ck.load_model(&self.vars))
                .and_then(|()| ck.load_optimizer(optimizer))
            {
                Ok(()) => return Ok(Some(ck.state.clone())),
                Err(e) => {
                    tracing::warn!("skipping checkpoint {}: {e}", ck.dir.display());
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            // why: a failed load may have overwritten some weights; never train on from a mixture.
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Mean loss over `eval_iters` validation batches drawn from a fixed stream.
    fn evaluate(&self) -> Result<f64, TrainError> {
        let mut sampler = BatchSampler::restore(SamplerState {
            seed: seed_for(self.opts.seed, "eval"),
            word_pos: 0,
        });
        let n = self.spec.eval_iters.max(1);
        let mut sum = 0f64;
        for _ in 0..n {
            let (xs, ys) = self
                .data
                .batch(Split::Val, self.spec.batch_size, &mut sampler, &self.device)?;
            let logits = self.model.forward(&xs, &mut ForwardCtx::eval())?;
            sum += f64::from(lm_loss(&logits, &ys)?.to_scalar::<f32>()?);
        }
        Ok(sum / n as f64)
    }
}

/// Install the Ctrl-C / SIGTERM handler (once) and clear an earlier request; loops other than
/// [`Trainer::run`] (the upcycle's blockwise phase) poll [`interrupt_requested`] after each step.
pub fn watch_ctrlc() {
    install_ctrlc();
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Whether Ctrl-C was pressed (or SIGTERM arrived) since [`watch_ctrlc`].
pub fn interrupt_requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// SIGINT, SIGTERM and SIGHUP (ctrlc's `termination` feature) all ask for a checkpoint and a stop.
fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // A second signal: the user does not want to wait for the checkpoint.
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: finishing the step and saving a checkpoint (Ctrl-C or SIGTERM again to quit now)"
            );
        });
        if let Err(e) = installed {
            tracing::debug!("no Ctrl-C handler installed: {e}");
        }
    });
}

/// A tensor error of step `step`'s `phase`; running out of device memory becomes
/// [`TrainError::OutOfMemory`] with the step, the phase, the memory in use and the batch size.
fn in_phase<'a>(
    step: usize,
    phase: &'static str,
    device: &'a Device,
    batch_size: usize,
) -> impl FnOnce(candle_core::Error) -> TrainError + 'a {
    move |e| {
        let text = e.to_string();
        if text.contains("OUT_OF_MEMORY") || text.contains("out of memory") {
            TrainError::OutOfMemory {
                step,
                phase,
                in_use_gib: crate::device::memory_in_use_bytes(device).map(gib),
                batch_size,
                detail: text.lines().next().unwrap_or_default().to_string(),
            }
        } else {
            TrainError::Tensor(e)
        }
    }
}

/// Bytes as GiB.
fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// The train log's memory note: the live tensor memory and, on a GPU, the driver's total in use.
fn memory_line(device: &Device, in_use_gib: Option<f64>) -> String {
    let driver = crate::device::gpu_memory_used_gib(device);
    match (in_use_gib, driver) {
        (Some(t), Some(d)) => format!(" (GPU tensors: {t:.2} GiB; GPU memory in use: {d:.1} GiB)"),
        (None, Some(d)) => format!(" (GPU memory in use: {d:.1} GiB)"),
        (Some(t), None) => format!(" (heap in use: {t:.2} GiB)"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_names_the_step_the_phase_and_the_batch() {
        let driver =
            candle_core::Error::Cuda("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into());
        let e = in_phase(42, "backward", &Device::Cpu, 16)(driver);
        let text = e.to_string();
        assert!(
            matches!(
                e,
                TrainError::OutOfMemory {
                    step: 42,
                    phase: "backward",
                    batch_size: 16,
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains("step 42 (backward) with batch size 16"), "{text}");
        let other = in_phase(1, "forward", &Device::Cpu, 1)(candle_core::Error::Msg("shape mismatch".into()));
        assert!(matches!(other, TrainError::Tensor(_)));
    }

    #[test]
    fn fingerprint_ignores_device_and_cadence_but_not_the_recipe() {
        let model: ModelSpec = serde_json::from_value(serde_json::json!({
            "embedder": {"type": "token", "vocab_size": 256, "d_model": 8},
            "topology": {"type": "RMSNormLayer", "d_model": 8}
        }))
        .expect("model spec");
        let base = TrainSpec::default();
        let same = TrainSpec {
            device: "cuda".into(),
            log_every: 1,
            save_every: Some(5),
            ..base.clone()
        };
        assert_eq!(fingerprint(&model, &base), fingerprint(&model, &same));
        let other = TrainSpec {
            lr: 1e-3,
            ..base.clone()
        };
        assert_ne!(fingerprint(&model, &base), fingerprint(&model, &other));
    }
}
