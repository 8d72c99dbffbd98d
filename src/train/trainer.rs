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

use super::branch::Snapshot;
use super::checkpoint::{self, CheckpointState, FORMAT};
use super::clip::GradClip;
use super::error::TrainError;
use super::metrics::{DecisionLine, EvalLine, MetricLine, MetricsLog, TrainLine};
use super::optimizer::Optimizer;
use super::orchestrator::{Orchestrator, OrchestratorMode, OrchestratorState};
use super::phase_clock::PhaseClock;
use super::schedule::Schedule;
use super::spec::TrainSpec;
use super::step::{RunState, StepReport};
use crate::console::Progress;
use crate::data::{BatchSampler, SamplerState, Split, TokenDataset};
use crate::instrument::Instrument as _;
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
    pub(crate) model: LanguageModel,
    vars: SeededVarMap,
    pub(crate) spec: TrainSpec,
    pub(crate) data: &'a TokenDataset,
    opts: TrainOptions,
    pub(crate) device: Device,
    interrupt: Arc<AtomicBool>,
    pub(crate) loss: Option<LossFn<'a>>,
}

/// What [`Trainer::prepare`] hands the loop.
struct Prepared {
    state: RunState,
    ledger: Ledger,
    orchestrator: Option<Orchestrator>,
    start: usize,
    resumed_from: Option<usize>,
}

/// The loop's record keeping: where it ends, the cadences, the throughput window, the files.
pub(crate) struct Ledger {
    pub(crate) ck_root: PathBuf,
    metrics: MetricsLog,
    /// events.jsonl, TensorBoard, the console and the live plot (`train.instrument`).
    instruments: crate::instrument::Instruments,
    pub(crate) progress: Progress,
    pub(crate) schedule: Schedule,
    /// The step this call stops after.
    pub(crate) end: usize,
    save_every: usize,
    t0: Instant,
    /// Training time of earlier calls (resumed runs).
    elapsed_before: f64,
    /// (seconds, tokens) since the last train line: throughput counts step time only.
    window: (f64, u64),
    train_secs: f64,
    /// Steps this call completed (the run's, not a branch's losing candidates').
    steps_run: usize,
    loss: f64,
    val_loss: Option<f64>,
    last_checkpoint: Option<PathBuf>,
    pub(crate) clock: PhaseClock,
    /// Completed steps before the last group of steps recorded together (a branch).
    pub(crate) group_start: usize,
}

impl Ledger {
    /// One line to metrics.jsonl and to every instrument.
    pub(crate) fn write(&mut self, line: &MetricLine) -> Result<(), TrainError> {
        self.metrics.write(line)?;
        Ok(self.instruments.metrics(line)?)
    }

    /// Training wall time so far, across resumes.
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.t0.elapsed().as_secs_f64()
    }

    /// Count time spent outside the recorded steps (a branch's losing candidates) as step time.
    pub(crate) fn add_overhead(&mut self, secs: f64) {
        self.window.0 += secs;
        self.train_secs += secs;
    }

    /// Whether a multiple of `every` lies in (group_start, done].
    fn crossed(&self, done: usize, every: usize) -> bool {
        self.group_start / every != done / every
    }
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
        if let Some((field, reason)) = spec
            .orchestrator
            .as_ref()
            .and_then(|o| o.problems().into_iter().next())
        {
            return Err(TrainError::BadSpec {
                field: "orchestrator",
                reason: format!("{field} {reason}"),
            });
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
    /// The loop reads as llm.c's: prepare, then step / record / maybe eval / maybe checkpoint,
    /// with the orchestrator (when the `train:` block has one) branching between steps.
    pub fn run(self) -> Result<TrainSummary, TrainError> {
        install_ctrlc();
        INTERRUPTED.store(false, Ordering::SeqCst);
        // why: two processes on one run directory would prune and rewrite each other's record.
        let _lock = crate::record::DirLock::acquire(&self.opts.run_dir)?;
        let Prepared {
            mut state,
            mut ledger,
            mut orchestrator,
            start,
            resumed_from,
        } = self.prepare()?;
        // why: the weights a non-finite step falls back to (an orchestrated run only).
        let mut safe = match &orchestrator {
            Some(o) if o.active() => Some(Snapshot::take(&state, start, o.state.current)?),
            _ => None,
        };
        let profiled_step = crate::device::profiled_step();
        let mut done = start;
        while done < ledger.end {
            // why the run's length and not this call's end: a run stopped and resumed must branch
            // where an uninterrupted one does (a branch may run past `stop_after`).
            if let Some(o) = orchestrator.as_mut()
                && let Some(reason) = o.due(done, self.opts.steps)
            {
                done = self.branch(&mut state, &mut ledger, o, done, reason)?;
                self.maybe_eval(&mut ledger, done, true)?;
                self.maybe_checkpoint(&state, &mut ledger, orchestrator.as_ref(), done, true)?;
                continue;
            }
            let profiling = profiled_step == Some(done + 1);
            crate::device::cuda_profiler(&self.device, profiling);
            let lr = ledger.schedule.lr(done);
            let stepped = self.step(&mut state, done, lr, &mut ledger.clock);
            if profiling {
                crate::device::cuda_profiler(&self.device, false);
            }
            let report = match (stepped, orchestrator.as_mut(), safe.as_ref()) {
                (Err(TrainError::NonFinite { step, loss }), Some(o), Some(snapshot)) => {
                    let Some(decision) = o.safety_switch(done) else {
                        return Err(TrainError::NonFinite { step, loss });
                    };
                    tracing::warn!(
                        "non-finite value at step {step}: weights from step {} and {}",
                        snapshot.step,
                        decision.to.as_str()
                    );
                    snapshot.restore_weights(&state)?;
                    let safety = o.current();
                    let warm = safety.shares_state_with(&o.strategy(snapshot.strategy));
                    state.adopt(
                        &safety,
                        warm.then_some(snapshot.optimizer_state()),
                        Some(snapshot.clip()),
                    )?;
                    ledger.write(&MetricLine::Decision(DecisionLine { step: done, decision }))?;
                    continue;
                }
                (stepped, _, _) => stepped?,
            };
            done += 1;
            if let Some(o) = orchestrator.as_mut() {
                o.observe(report.loss);
            }
            self.record(&mut ledger, done, &report)?;
            self.maybe_eval(&mut ledger, done, false)?;
            if self.maybe_checkpoint(&state, &mut ledger, orchestrator.as_ref(), done, false)?
                && let Some(o) = &orchestrator
                && o.active()
            {
                safe = Some(Snapshot::take(&state, done, o.state.current)?);
            }
        }
        self.finish(ledger, done, resumed_from)
    }

    /// Lock-free preparation: the trainable variables, the optimizer, the seeded streams, and the
    /// resumed state of a checkpoint when there is one.
    fn prepare(&self) -> Result<Prepared, TrainError> {
        let (spec, opts) = (&self.spec, &self.opts);
        let run_dir = opts.run_dir.as_path();
        let ck_root = run_dir.join("checkpoints");
        checkpoint::remove_stale_temps(&ck_root)?;
        let trainable = self.trainable()?;
        crate::kernels::set_fused_training(spec.fused);
        tracing::info!(
            "attention: {}",
            crate::kernels::flash_attention::training_path(&self.device, trainable[0].1.dtype())
        );
        let mut orchestrator = spec
            .orchestrator
            .clone()
            .filter(|o| o.effective_mode() != OrchestratorMode::Disabled)
            .map(|o| Orchestrator::new(o, spec));
        let first = orchestrator.as_ref().map(|o| o.current());
        let mut state = RunState {
            optimizer: Optimizer::new(first.as_ref().map_or(spec, |s| &s.spec), trainable.clone())?,
            sampler: BatchSampler::new(seed_for(opts.seed, "data")),
            dropout: ChaCha8Rng::seed_from_u64(seed_for(opts.seed, "dropout")),
            tokens_seen: 0,
            lr_scale: 1.0,
            clip: GradClip::new(spec),
        };
        if let Some(s) = &first {
            (state.lr_scale, state.clip) = (s.lr_scale, s.grad_clip());
        }
        let resumed = if opts.fresh {
            if ck_root.exists() {
                tracing::warn!("--fresh: removing old checkpoints in {}", ck_root.display());
                std::fs::remove_dir_all(&ck_root).map_err(|e| TrainError::io(&ck_root, e))?;
            }
            None
        } else {
            self.resume(&ck_root, &trainable, &mut state, &mut orchestrator)?
        };
        let (start, elapsed_before, loss) = match &resumed {
            Some(s) => {
                state.sampler = BatchSampler::restore(s.data);
                state.dropout.set_word_pos(s.dropout_word_pos);
                state.tokens_seen = s.tokens_seen;
                tracing::info!("resuming from step {} ({})", s.step, ck_root.display());
                (s.step, s.elapsed_s, s.loss)
            }
            None => (0, 0.0, f64::NAN),
        };
        let resumed_from = resumed.as_ref().map(|s| s.step);
        if let Some(o) = &orchestrator {
            tracing::info!(
                "orchestrator ({:?}): strategy {}",
                o.spec.effective_mode(),
                o.state.current.as_str()
            );
        }
        let progress = Progress::new(opts.steps as u64, "train");
        progress.set_position(start as u64);
        // why after the progress bar: the live loss plot draws below it.
        let run_id = run_dir
            .file_name()
            .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned());
        let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let instruments =
            crate::instrument::open(&spec.instrument, run_dir, &run_id, resumed_from, interactive)?;
        let ledger = Ledger {
            instruments,
            metrics: MetricsLog::open(run_dir, resumed_from)?,
            ck_root,
            progress,
            schedule: Schedule::new(spec, opts.steps),
            end: opts.stop_after.map_or(opts.steps, |s| s.min(opts.steps)),
            save_every: spec.save_every.unwrap_or(100),
            t0: Instant::now(),
            elapsed_before,
            window: (0.0, 0),
            train_secs: 0.0,
            steps_run: 0,
            loss,
            val_loss: None,
            last_checkpoint: None,
            clock: PhaseClock::from_env(&self.device),
            group_start: start,
        };
        Ok(Prepared {
            state,
            ledger,
            orchestrator,
            start,
            resumed_from,
        })
    }

    /// The variables that train: not buffers, and within `train_only` when it is set.
    fn trainable(&self) -> Result<Vec<(String, candle_core::Var)>, TrainError> {
        let trains = |name: &str| {
            !crate::model::init::is_buffer(name)
                && self
                    .opts
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
        Ok(trainable)
    }

    /// Count a completed step (the `done`-th) and write its train line when one is due.
    pub(crate) fn record(
        &self,
        ledger: &mut Ledger,
        done: usize,
        report: &StepReport,
    ) -> Result<(), TrainError> {
        let tokens = (self.spec.batch_size * self.spec.grad_accum * self.data.block_size()) as u64;
        ledger.window = (ledger.window.0 + report.secs, ledger.window.1 + tokens);
        ledger.train_secs += report.secs;
        ledger.steps_run += 1;
        ledger.loss = report.loss;
        let log_every = self.spec.log_every;
        if (log_every > 0 && done.is_multiple_of(log_every)) || done == ledger.end {
            let tokens_per_sec = ledger.window.1 as f64 / ledger.window.0.max(1e-9);
            ledger.window = (0.0, 0);
            let memory_gib = crate::device::memory_in_use_bytes(&self.device).map(gib);
            let StepReport {
                loss,
                lr,
                grad_norm,
                aux_loss,
                ..
            } = *report;
            ledger.write(&MetricLine::Train(TrainLine {
                step: done,
                loss,
                lr,
                grad_norm,
                tokens_per_sec,
                elapsed_s: ledger.elapsed(),
                memory_gib,
                aux_loss,
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
            ledger
                .progress
                .set_message(&format!("loss {loss:.4} · {tokens_per_sec:.0} tok/s"));
        }
        ledger.progress.set_position(done as u64);
        Ok(())
    }

    /// Eval on the val split when due at `done` (or, with `crossed`, when a cadence point fell
    /// among steps logged together, as after a branch).
    fn maybe_eval(&self, ledger: &mut Ledger, done: usize, crossed: bool) -> Result<(), TrainError> {
        let every = self.spec.eval_every;
        let due = every > 0
            && (done.is_multiple_of(every) || done == ledger.end || (crossed && ledger.crossed(done, every)));
        if !(due && self.data.has_val()) {
            return Ok(());
        }
        let v = self.evaluate()?;
        ledger.val_loss = Some(v);
        ledger.write(&MetricLine::Eval(EvalLine {
            step: done,
            val_loss: v,
            elapsed_s: ledger.elapsed(),
            val_accuracy: None,
        }))?;
        tracing::info!(step = done, val_loss = format!("{v:.4}"), "eval");
        Ok(())
    }

    /// Write a checkpoint when one is due at `done` or an interrupt asked; returns whether it
    /// wrote one, and turns an interrupt into [`TrainError::Interrupted`] after writing.
    fn maybe_checkpoint(
        &self,
        state: &RunState,
        ledger: &mut Ledger,
        orchestrator: Option<&Orchestrator>,
        done: usize,
        crossed: bool,
    ) -> Result<bool, TrainError> {
        let every = ledger.save_every;
        let interrupted = self.interrupted();
        let due = (every > 0 && (done.is_multiple_of(every) || (crossed && ledger.crossed(done, every))))
            || done == ledger.end
            || interrupted;
        if !due {
            return Ok(false);
        }
        let opts = &self.opts;
        let ck = CheckpointState {
            format: FORMAT,
            step: done,
            total_steps: opts.steps,
            seed: opts.seed,
            fingerprint: opts.fingerprint.clone(),
            optimizer: state.optimizer.kind().into(),
            data: state.sampler.state(),
            dropout_word_pos: state.dropout.get_word_pos(),
            elapsed_s: ledger.elapsed(),
            tokens_seen: state.tokens_seen,
            loss: ledger.loss,
            extra: match orchestrator {
                Some(o) => serde_json::json!({ "orchestrator": o.state }),
                None => serde_json::Value::Null,
            },
            files: Default::default(),
        };
        // why: all variables, not only the trained ones, so the file is a complete model.
        let all_vars = self.vars.named_vars();
        let dir = checkpoint::save_with_clip(
            &ledger.ck_root,
            &ck,
            &all_vars,
            &state.optimizer,
            state.clip.adagc(),
            self.spec.keep_checkpoints,
        )?;
        tracing::debug!("checkpoint {}", dir.display());
        // why: the TensorBoard writer buffers; what a checkpoint covers is on disk with it.
        ledger.instruments.flush()?;
        ledger.last_checkpoint = Some(dir.clone());
        if interrupted {
            return Err(TrainError::Interrupted {
                step: done,
                checkpoint: dir,
            });
        }
        Ok(true)
    }

    /// The summary of this call, after the last step.
    fn finish(
        &self,
        mut ledger: Ledger,
        done: usize,
        resumed_from: Option<usize>,
    ) -> Result<TrainSummary, TrainError> {
        ledger.clock.report();
        ledger.instruments.flush()?;
        let wall = ledger.t0.elapsed().as_secs_f64();
        tracing::info!(
            steps = done,
            loss = format!("{:.4}", ledger.loss),
            elapsed_s = format!("{:.1}", ledger.elapsed()),
            "training done"
        );
        let tokens_per_step = (self.spec.batch_size * self.spec.grad_accum * self.data.block_size()) as u64;
        let trained = ledger.steps_run as u64 * tokens_per_step;
        Ok(TrainSummary {
            steps: done,
            final_loss: ledger.loss,
            val_loss: ledger.val_loss,
            tokens_per_sec: trained as f64 / ledger.train_secs.max(1e-9),
            wall_time_s: wall,
            resumed_from,
            checkpoint: ledger
                .last_checkpoint
                .or_else(|| checkpoint::latest_complete(&ledger.ck_root).map(|c| c.dir)),
        })
    }

    /// Load the newest loadable checkpoint; skips unreadable or corrupt ones with a warning, and
    /// refuses (rather than start over) when there are checkpoints but none is readable. An
    /// orchestrated run's checkpoint also restores the orchestrator and its strategy's optimizer.
    fn resume(
        &self,
        ck_root: &Path,
        trainable: &[(String, candle_core::Var)],
        state: &mut RunState,
        orchestrator: &mut Option<Orchestrator>,
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
            let restored = match orchestrator.as_ref() {
                Some(o) => match ck.state.extra.get("orchestrator") {
                    Some(saved) => serde_json::from_value::<OrchestratorState>(saved.clone())
                        .map(|saved| Some(Orchestrator::restore(o.spec.clone(), &self.spec, saved)))
                        .map_err(|e| TrainError::BadSpec {
                            field: "orchestrator",
                            reason: format!("{}: unreadable orchestrator state: {e}", ck.dir.display()),
                        }),
                    None => Err(TrainError::BadSpec {
                        field: "orchestrator",
                        reason: format!(
                            "{} was written without an orchestrator; resume it without `orchestrator:` or start with --fresh",
                            ck.dir.display()
                        ),
                    }),
                },
                None => Ok(None),
            };
            let loaded = restored.and_then(|restored| {
                if let Some(o) = &restored {
                    state.optimizer = Optimizer::new(&o.current().spec, trainable.to_vec())?;
                    (state.lr_scale, state.clip) = (o.current().lr_scale, o.current().grad_clip());
                }
                ck.verify()
                    .and_then(|()| ck.load_model(&self.vars))
                    .and_then(|()| ck.load_optimizer(&mut state.optimizer))
                    .and_then(|()| state.clip.adagc_mut().map_or(Ok(()), |a| ck.load_adagc(a)))?;
                Ok(restored)
            });
            match loaded {
                Ok(restored) => {
                    if restored.is_some() {
                        *orchestrator = restored;
                    }
                    return Ok(Some(ck.state.clone()));
                }
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
    pub(crate) fn evaluate(&self) -> Result<f64, TrainError> {
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
pub(crate) fn in_phase<'a>(
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
