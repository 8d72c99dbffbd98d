//! The classifier training loop (`objective: classification_ce`): mini-batches of feature rows,
//! cross-entropy against class labels, the same optimizers, schedule, clipping, `metrics.jsonl`,
//! atomic checkpoints and exact resume as the language-model [`super::Trainer`]; evaluation on
//! the whole val split (loss and accuracy) and, at the end, on the test split (accuracy, per-class
//! accuracy, confusion matrix, every prediction).
//!
//! Batches walk the train rows epoch by epoch, each epoch in an order shuffled by a ChaCha8 stream
//! seeded from (run seed, epoch); the rows of step k are a function of k alone, so a resumed run
//! draws exactly the batches it would have drawn. Dropout has its own saved stream.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::checkpoint::{self, CheckpointState, FORMAT};
use super::clip::clip_grad_norm;
use super::error::TrainError;
use super::metrics::{EvalLine, MetricLine, MetricsLog, TrainLine};
use super::optimizer::Optimizer;
use super::schedule::Schedule;
use super::spec::TrainSpec;
use super::trainer::{TrainOptions, parse_device, parse_dtype};
use crate::console::Progress;
use crate::data::{Part, SamplerState, SupervisedDataset};
use crate::model::init::seed_for;
use crate::model::{Classifier, ForwardCtx, ModelSpec, SeededVarMap};

/// Rows evaluated per forward pass.
const EVAL_BATCH: usize = 512;

/// Held-out results of a classifier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Rows evaluated.
    pub rows: usize,
    /// Mean cross-entropy (nats).
    pub loss: f64,
    /// Fraction whose arg-max class is the label.
    pub accuracy: f64,
    /// Accuracy within each class (NaN-free: a class without rows gets 0 and count 0).
    pub per_class_accuracy: Vec<f64>,
    /// Rows of each class.
    pub per_class_count: Vec<usize>,
    /// `confusion[label][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// `(row, label, predicted)` of every evaluated row, in row order.
    #[serde(skip)]
    pub predictions: Vec<(usize, u32, u32)>,
}

/// What a classifier run achieved.
#[derive(Debug, Clone)]
pub struct ClassifierSummary {
    pub steps: usize,
    /// Train loss of the last step.
    pub final_loss: f64,
    /// The last val evaluation (none without a val split or with `eval_every: 0`).
    pub val: Option<Evaluation>,
    /// The test split, with the final weights.
    pub test: Evaluation,
    /// Training rows per second (step time only).
    pub examples_per_sec: f64,
    /// Wall time of this call's loop (seconds).
    pub wall_time_s: f64,
    /// Training wall time over the whole run, resumes included (seconds).
    pub train_time_s: f64,
    pub resumed_from: Option<usize>,
    pub checkpoint: Option<std::path::PathBuf>,
}

/// Build the classifier of `model` with seeded weights and train it on `data`.
pub fn train_classifier(
    model: &ModelSpec,
    spec: &TrainSpec,
    data: &SupervisedDataset,
    opts: TrainOptions,
) -> Result<ClassifierSummary, TrainError> {
    if spec.batch_size == 0 || spec.grad_accum == 0 || opts.steps == 0 {
        return Err(TrainError::BadSpec {
            field: "batch_size",
            reason: "batch_size, grad_accum and steps must each be at least 1".into(),
        });
    }
    let device = parse_device(&spec.device)?;
    let dtype = parse_dtype(&spec.dtype, &device)?;
    let vars = SeededVarMap::new(opts.seed);
    let net = Classifier::build(model, vars.var_builder(dtype, &device))?;
    let run_dir = opts.run_dir.as_path();
    let _lock = crate::record::DirLock::acquire(run_dir)?;
    let ck_root = run_dir.join("checkpoints");
    checkpoint::remove_stale_temps(&ck_root)?;
    super::trainer::watch_ctrlc();
    crate::kernels::set_fused_training(spec.fused);
    let trainable: Vec<_> = vars
        .named_vars()
        .into_iter()
        .filter(|(n, _)| !crate::model::init::is_buffer(n))
        .collect();
    if trainable.is_empty() {
        return Err(TrainError::BadSpec {
            field: "model",
            reason: "the classifier has no parameters to train".into(),
        });
    }
    let mut optimizer = Optimizer::new(spec, trainable)?;
    let mut dropout = ChaCha8Rng::seed_from_u64(seed_for(opts.seed, "dropout"));
    let resumed = if opts.fresh {
        if ck_root.exists() {
            tracing::warn!("--fresh: removing old checkpoints in {}", ck_root.display());
            std::fs::remove_dir_all(&ck_root).map_err(|e| TrainError::io(&ck_root, e))?;
        }
        None
    } else {
        resume(&ck_root, &opts.fingerprint, &vars, &mut optimizer)?
    };
    let (start, elapsed_before, mut loss) = match &resumed {
        Some(s) => {
            dropout.set_word_pos(s.dropout_word_pos);
            tracing::info!("resuming from step {} ({})", s.step, ck_root.display());
            (s.step, s.elapsed_s, s.loss)
        }
        None => (0, 0.0, f64::NAN),
    };
    let resumed_from = resumed.as_ref().map(|s| s.step);
    let mut metrics = MetricsLog::open(run_dir, resumed_from)?;
    let schedule = Schedule::new(spec, opts.steps);
    let end = opts.stop_after.map_or(opts.steps, |s| s.min(opts.steps));
    let save_every = spec.save_every.unwrap_or(100);
    let rows_per_step = spec.batch_size * spec.grad_accum;
    let batches = EpochBatches::new(data.rows(Part::Train), opts.seed);
    let vars_list = optimizer.vars().to_vec();
    let progress = Progress::new(opts.steps as u64, "train");
    progress.set_position(start as u64);
    let t0 = Instant::now();
    let (mut window_secs, mut window_rows, mut train_secs) = (0f64, 0usize, 0f64);
    let (mut val, mut last_checkpoint) = (None, None);
    for step in start..end {
        let step_start = Instant::now();
        let lr = schedule.lr(step);
        let mut grads: Vec<Option<Tensor>> = vec![None; vars_list.len()];
        let mut loss_sum = 0f64;
        for micro in 0..spec.grad_accum {
            let rows = batches.rows(step * spec.grad_accum + micro, spec.batch_size);
            let (xs, ys) = data.batch(&rows, &device)?;
            let xs = xs.to_dtype(dtype)?;
            let logits = net.forward(&xs, &mut ForwardCtx::train(&mut dropout))?;
            let step_loss = class_loss(&logits, &ys)?;
            let value = f64::from(step_loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
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
            let store = scaled.backward()?;
            super::gradients::detached_f32(&store, &vars_list)
                .and_then(|more| super::gradients::accumulate(&mut grads, more))?;
        }
        loss = loss_sum / spec.grad_accum as f64;
        let grad_norm = clip_grad_norm(&mut grads, spec.grad_clip)?;
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                loss: grad_norm,
            });
        }
        optimizer.step(&grads, lr)?;
        let done = step + 1;
        let step_secs = step_start.elapsed().as_secs_f64();
        (window_secs, window_rows, train_secs) = (
            window_secs + step_secs,
            window_rows + rows_per_step,
            train_secs + step_secs,
        );
        let elapsed = elapsed_before + t0.elapsed().as_secs_f64();
        if (spec.log_every > 0 && done % spec.log_every == 0) || done == end {
            let per_sec = window_rows as f64 / window_secs.max(1e-9);
            (window_secs, window_rows) = (0.0, 0);
            metrics.write(&MetricLine::Train(TrainLine {
                step: done,
                loss,
                lr,
                grad_norm,
                tokens_per_sec: per_sec,
                elapsed_s: elapsed,
                memory_gib: None,
                aux_loss: None,
            }))?;
            tracing::info!(
                step = done,
                loss = format!("{loss:.4}"),
                lr = format!("{lr:.3e}"),
                "train"
            );
            progress.set_message(&format!("loss {loss:.4} · {per_sec:.0} rows/s"));
        }
        progress.set_position(done as u64);
        let eval_due = spec.eval_every > 0 && (done % spec.eval_every == 0 || done == end);
        if eval_due && !data.rows(Part::Val).is_empty() {
            let v = evaluate(&net, data, Part::Val, &device, dtype)?;
            metrics.write(&MetricLine::Eval(EvalLine {
                step: done,
                val_loss: v.loss,
                elapsed_s: elapsed,
                val_accuracy: Some(v.accuracy),
            }))?;
            tracing::info!(
                step = done,
                val_loss = format!("{:.4}", v.loss),
                val_accuracy = format!("{:.4}", v.accuracy),
                "eval"
            );
            val = Some(v);
        }
        let interrupted = super::trainer::interrupt_requested();
        if (save_every > 0 && done % save_every == 0) || done == end || interrupted {
            let state = CheckpointState {
                format: FORMAT,
                step: done,
                total_steps: opts.steps,
                seed: opts.seed,
                fingerprint: opts.fingerprint.clone(),
                optimizer: optimizer.kind().into(),
                // why: the batch order is a function of the step; the sampler state only records
                // the stream it derives from.
                data: SamplerState {
                    seed: seed_for(opts.seed, "data"),
                    word_pos: 0,
                },
                dropout_word_pos: dropout.get_word_pos(),
                elapsed_s: elapsed_before + t0.elapsed().as_secs_f64(),
                tokens_seen: (done * rows_per_step) as u64,
                loss,
                extra: serde_json::Value::Null,
                files: Default::default(),
            };
            let dir = checkpoint::save(
                &ck_root,
                &state,
                &vars.named_vars(),
                &optimizer,
                spec.keep_checkpoints,
            )?;
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
    let test = evaluate(&net, data, Part::Test, &device, dtype)?;
    let wall = t0.elapsed().as_secs_f64();
    let trained = end.saturating_sub(start) * rows_per_step;
    Ok(ClassifierSummary {
        steps: end.max(start),
        final_loss: loss,
        val,
        test,
        examples_per_sec: trained as f64 / train_secs.max(1e-9),
        wall_time_s: wall,
        train_time_s: elapsed_before + wall,
        resumed_from,
        checkpoint: last_checkpoint.or_else(|| checkpoint::latest_complete(&ck_root).map(|c| c.dir)),
    })
}

/// Mean cross-entropy of logits (b, k) against labels (b,), in f32.
pub fn class_loss(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    crate::ops::cross_entropy::cross_entropy(&logits.to_dtype(DType::F32)?, labels)
}

/// Loss, accuracy, per-class accuracy and confusion matrix of `part`.
pub fn evaluate(
    net: &Classifier,
    data: &SupervisedDataset,
    part: Part,
    device: &Device,
    dtype: DType,
) -> Result<Evaluation, TrainError> {
    let k = data.n_classes();
    let rows = data.rows(part);
    let mut confusion = vec![vec![0usize; k]; k];
    let mut predictions = Vec::with_capacity(rows.len());
    let mut loss_sum = 0f64;
    for chunk in rows.chunks(EVAL_BATCH) {
        let (xs, ys) = data.batch(chunk, device)?;
        let logits = net.forward(&xs.to_dtype(dtype)?, &mut ForwardCtx::eval())?;
        let loss = class_loss(&logits, &ys)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * chunk.len() as f64;
        let predicted: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        for (&row, &p) in chunk.iter().zip(&predicted) {
            let y = data.label(row);
            confusion[y as usize][p as usize] += 1;
            predictions.push((row, y, p));
        }
    }
    let n = rows.len().max(1);
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let per_class_count: Vec<usize> = confusion.iter().map(|r| r.iter().sum()).collect();
    let per_class_accuracy = (0..k)
        .map(|c| {
            if per_class_count[c] == 0 {
                0.0
            } else {
                confusion[c][c] as f64 / per_class_count[c] as f64
            }
        })
        .collect();
    Ok(Evaluation {
        rows: rows.len(),
        loss: loss_sum / n as f64,
        accuracy: correct as f64 / n as f64,
        per_class_accuracy,
        per_class_count,
        confusion,
        predictions,
    })
}

/// The train rows in epochs, each shuffled from (seed, epoch); batch i is a pure function of i.
struct EpochBatches<'a> {
    rows: &'a [usize],
    seed: u64,
    cache: std::cell::RefCell<Option<(usize, Vec<usize>)>>,
}

impl<'a> EpochBatches<'a> {
    fn new(rows: &'a [usize], seed: u64) -> Self {
        Self {
            rows,
            seed,
            cache: std::cell::RefCell::new(None),
        }
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut cache = self.cache.borrow_mut();
        if let Some((e, order)) = cache.as_ref()
            && *e == epoch
        {
            return order.clone();
        }
        let mut order = self.rows.to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(seed_for(self.seed, &format!("data/epoch{epoch}")));
        order.shuffle(&mut rng);
        *cache = Some((epoch, order.clone()));
        order
    }

    /// Rows of batch `i` (batches run across epoch ends).
    fn rows(&self, i: usize, batch: usize) -> Vec<usize> {
        let n = self.rows.len();
        (0..batch)
            .map(|j| {
                let k = i * batch + j;
                self.order(k / n)[k % n]
            })
            .collect()
    }
}

/// The newest loadable checkpoint (as [`super::Trainer`] resumes).
fn resume(
    ck_root: &Path,
    fingerprint: &str,
    vars: &SeededVarMap,
    optimizer: &mut Optimizer,
) -> Result<Option<CheckpointState>, TrainError> {
    let mut first_error = None;
    for ck in &checkpoint::resumable(ck_root)? {
        if ck.state.fingerprint != fingerprint {
            return Err(TrainError::FingerprintMismatch {
                dir: ck.dir.clone(),
                found: ck.state.fingerprint.clone(),
                expected: fingerprint.to_string(),
            });
        }
        match ck
            .verify()
            .and_then(|()| ck.load_model(vars))
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
        Some(e) => Err(e),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_every_row_once_and_batches_depend_on_the_index_only() {
        let rows: Vec<usize> = (10..20).collect();
        let b = EpochBatches::new(&rows, 3);
        let mut first: Vec<usize> = (0..5).flat_map(|i| b.rows(i, 2)).collect();
        first.sort_unstable();
        assert_eq!(first, rows, "one epoch = every row once");
        let again = EpochBatches::new(&rows, 3);
        assert_eq!(b.rows(7, 3), again.rows(7, 3));
    }
}
