//! `caramba run` for `trainer: upcycle` targets: load the teacher, build the student by surgery,
//! run the target's phases in order (blockwise, global), verify against the teacher before and
//! after, and record `report.json` and the student under `runs/<name>/<target>/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::blockwise::{BlockRecord, Blockwise, teacher_outputs};
use super::global::{GlobalLoss, TrainParams, global_loss};
use super::spec::{VerifySpec, parse_verify};
use super::student::{Student, build_student, partially_frozen};
use super::teacher::{Teacher, load_teacher};
use super::verify::{Verification, verify};
use super::{Phase, UpcycleError};
use crate::bench::eval_cases::{EvalOptions, EvalReport, score_cases};
use crate::compiler::{Compiled, TargetPlan};
use crate::data::{BatchSampler, DataSpec, Split, ensure_prepared};
use crate::experiment::RunDir;
use crate::model::LanguageModel;
use crate::record::write_json;
use crate::train::{TrainOptions, Trainer, parse_device};

/// What one phase did.
#[derive(Debug, Serialize)]
#[serde(tag = "phase", rename_all = "lowercase")]
enum PhaseRecord {
    Blockwise {
        run_id: String,
        steps_per_layer: usize,
        layers: Vec<BlockRecord>,
        /// The step (over all layers) this invocation resumed from.
        resumed_from: Option<usize>,
        wall_time_s: f64,
    },
    Global {
        run_id: String,
        steps: usize,
        distill_loss: GlobalLoss,
        params: TrainParams,
        resumed_from: Option<usize>,
        final_loss: f64,
        val_loss: Option<f64>,
        tokens_per_sec: f64,
        wall_time_s: f64,
    },
}

#[derive(Debug, Serialize)]
struct Summary {
    teacher_perplexity: f64,
    student_perplexity: f64,
    perplexity_ratio: f64,
    initial_student_perplexity: f64,
    teacher_kvcache_bytes_per_token: usize,
    student_kvcache_bytes_per_token: usize,
    kvcache_reduction: f64,
    kvcache_precision: &'static str,
}

#[derive(Debug, Serialize)]
struct Report {
    manifest: String,
    target: String,
    teacher: String,
    dba_init: super::DbaInit,
    device: String,
    /// The student's parameter dtype.
    dtype: String,
    git_revision: Option<String>,
    summary: Summary,
    initial: Verification,
    phases: Vec<PhaseRecord>,
    /// Checks of the runs' `verify:` blocks, in order.
    checks: Vec<CheckResult>,
    verify: Verification,
    wall_time_s: f64,
}

/// Run an upcycle target end to end. Returns the path of `report.json`.
pub fn run_upcycle(
    compiled: &Compiled,
    target: &TargetPlan,
    runs_root: &Path,
    device_override: Option<&str>,
    fresh: bool,
) -> Result<PathBuf, UpcycleError> {
    let t0 = std::time::Instant::now();
    let first = target
        .runs
        .first()
        .ok_or_else(|| UpcycleError::Spec("the target has no runs".into()))?;
    let device_name = device_override.unwrap_or(&first.train.device).to_string();
    let device = parse_device(&device_name)?;
    let dtype = crate::train::parse_dtype(&first.train.dtype, &device)?;
    tracing::info!(
        device = %crate::device::describe(&device),
        dtype = crate::device::dtype_name(dtype),
        "student"
    );
    let teacher_src = target
        .teacher
        .as_deref()
        .ok_or_else(|| UpcycleError::Spec("no `teacher:` is named".into()))?;
    tracing::info!(teacher = teacher_src, "loading the teacher");
    let teacher = load_teacher(teacher_src, &device)?;
    let data_spec = with_teacher_tokenizer(&target.data, &teacher)?;
    let val_frac = data_spec.val_frac.unwrap_or(0.1);
    let prepared = ensure_prepared(&data_spec, val_frac, "bytes")?;
    let data = &prepared.dataset;
    let cfg = &target.upcycle;
    let batch = first.train.batch_size;
    let mut sampler = BatchSampler::new(first.seed);
    let draw =
        |n: usize, split: Split, sampler: &mut BatchSampler| -> Result<Vec<(Tensor, Tensor)>, UpcycleError> {
            (0..n)
                .map(|_| Ok(data.batch(split, batch, sampler, &device)?))
                .collect()
        };
    let calibration: Vec<Tensor> = draw(cfg.calibration_batches, Split::Train, &mut sampler)?
        .into_iter()
        .map(|(x, _)| x)
        .collect();
    let val_split = if data.has_val() { Split::Val } else { Split::Train };
    let held_out = draw(
        cfg.verify_batches.max(1),
        val_split,
        &mut BatchSampler::new(first.seed ^ 0x5eed),
    )?;

    tracing::info!(init = ?cfg.dba_init, "surgery");
    let student = build_student(
        &teacher,
        &target.model,
        cfg,
        first.seed,
        &calibration,
        &device,
        dtype,
    )?;
    let initial = verify(
        &teacher.loaded.model,
        &teacher.loaded.spec,
        &student.model,
        &target.model,
        &held_out,
    )?;
    tracing::info!(
        teacher_ppl = format!("{:.3}", initial.teacher_perplexity),
        student_ppl = format!("{:.3}", initial.student_perplexity),
        "after surgery"
    );
    let target_dir = runs_root.join(&compiled.plan.name).join(&target.name);
    let mut phases = Vec::new();
    let mut checks = Vec::new();
    let mut pool = None;
    let mut teacher_evals: HashMap<String, EvalReport> = HashMap::new();
    // A global phase with a checkpoint resumes from it (the student's weights live there), so
    // redoing the blockwise phases before it would be thrown away.
    let resumable_global = !fresh
        && target.runs.iter().any(|r| {
            r.phase == Phase::Global
                && crate::train::latest_complete(
                    &RunDir::for_run(runs_root, &compiled.plan.name, &target.name, &r.id).checkpoints(),
                )
                .is_some()
        });
    for run in &target.runs {
        if run.phase == Phase::Blockwise && resumable_global {
            tracing::info!(run = %run.id, "skipping blockwise: a later global phase resumes from its checkpoint (use --fresh to redo)");
            continue;
        }
        let mut train = run.train.clone();
        train.device = device_name.clone();
        let dir = RunDir::for_run(runs_root, &compiled.plan.name, &target.name, &run.id);
        let _lock = crate::record::DirLock::acquire(&dir.root).map_err(crate::train::TrainError::from)?;
        // why: run.json records the device this run trains on (`--device` included), not the
        // manifest's default.
        let resolved = crate::compiler::RunPlan {
            train: train.clone(),
            ..run.clone()
        };
        dir.write_header(compiled, target, &resolved)
            .map_err(|e| UpcycleError::Io {
                path: dir.root.clone(),
                source: e,
            })?;
        let started = std::time::Instant::now();
        match run.phase {
            Phase::Blockwise => {
                if pool.is_none() {
                    let ids: Vec<Tensor> = draw(cfg.teacher_batches.max(1), Split::Train, &mut sampler)?
                        .into_iter()
                        .map(|(x, _)| x)
                        .collect();
                    tracing::info!(batches = ids.len(), "caching teacher attention outputs");
                    pool = Some(teacher_outputs(&teacher.loaded.model, ids, cfg.blockwise_input)?);
                }
                let pool = pool.as_ref().expect("filled above");
                let outcome = Blockwise {
                    student: &student,
                    spec: &target.model,
                    train: &train,
                    steps: run.steps,
                    loss: cfg.distill_loss,
                    input: cfg.blockwise_input,
                    pool,
                    device: &device,
                    seed: run.seed,
                    run_dir: &dir.root,
                    fingerprint: run_fingerprint(
                        &target.model,
                        &train,
                        teacher_src,
                        cfg,
                        &data_spec,
                        run.steps,
                    ),
                    fresh,
                }
                .run()?;
                phases.push(PhaseRecord::Blockwise {
                    run_id: run.id.clone(),
                    steps_per_layer: run.steps,
                    layers: outcome.layers,
                    resumed_from: outcome.resumed_from,
                    wall_time_s: started.elapsed().as_secs_f64(),
                });
            }
            Phase::Global => {
                // why: the teacher outputs (and inputs) cached for blockwise phases are one
                // (batch, block, d_model) tensor per layer and batch: gigabytes a global phase needs.
                pool = None;
                let g = &cfg.global;
                if !(g.temperature.is_finite() && g.temperature > 0.0) {
                    return Err(UpcycleError::Spec(format!(
                        "upcycle.global.temperature must be a positive number, not {}",
                        g.temperature
                    )));
                }
                let train_only: Option<Vec<String>> = (g.params == TrainParams::Attention)
                    .then(|| student.attention_paths.iter().map(|p| format!("{p}.")).collect());
                let model = match &train_only {
                    Some(prefixes) => {
                        partially_frozen(
                            &target.model,
                            &student.vars,
                            |n| prefixes.iter().any(|p| n.starts_with(p.as_str())),
                            &device,
                            dtype,
                        )?
                        .0
                    }
                    None => LanguageModel::build(&target.model, student.vars.var_builder(dtype, &device))?,
                };
                let mut opts = TrainOptions::new(&target.model, &train, run.steps, run.seed, &dir.root);
                opts.fresh = fresh;
                opts.train_only = train_only;
                // why: the loss and the trained set change the weights, so they are part of the recipe.
                opts.fingerprint =
                    run_fingerprint(&target.model, &train, teacher_src, cfg, &data_spec, run.steps);
                let mut trainer = Trainer::new(model, student.vars.clone(), &train, data, opts)?;
                if g.distill_loss == GlobalLoss::Kl {
                    let t = &teacher.loaded.model;
                    trainer =
                        trainer.with_loss(Box::new(move |xs: &Tensor, logits: &Tensor, ys: &Tensor| {
                            global_loss(g, t, xs, logits, ys)
                        }));
                }
                let summary = trainer.run()?;
                if summary.resumed_from == Some(summary.steps) {
                    tracing::info!(run = %run.id, steps = summary.steps, "global phase already done; weights reloaded");
                }
                phases.push(PhaseRecord::Global {
                    run_id: run.id.clone(),
                    steps: summary.steps,
                    distill_loss: g.distill_loss,
                    params: g.params,
                    resumed_from: summary.resumed_from,
                    final_loss: summary.final_loss,
                    val_loss: summary.val_loss,
                    tokens_per_sec: summary.tokens_per_sec,
                    wall_time_s: started.elapsed().as_secs_f64(),
                });
            }
        }
        if !run.verify.is_empty() {
            let specs: Vec<VerifySpec> = run
                .verify
                .iter()
                .map(parse_verify)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| UpcycleError::Spec(e.to_string()))?
                .into_iter()
                .flatten()
                .collect();
            let model = LanguageModel::build(&target.model, student.vars.var_builder(dtype, &device))?;
            let v = verify(
                &teacher.loaded.model,
                &teacher.loaded.spec,
                &model,
                &target.model,
                &held_out,
            )?;
            for spec in &specs {
                let eval = match spec {
                    VerifySpec::Eval {
                        cases,
                        max_new_tokens,
                        chat,
                        ..
                    } => {
                        let opts = EvalOptions {
                            max_new_tokens: *max_new_tokens,
                            chat: *chat,
                        };
                        let tok = teacher.loaded.tokenizer.as_ref().ok_or_else(|| {
                            UpcycleError::Spec(
                                "an eval check needs the teacher's tokenizer; this teacher has none".into(),
                            )
                        })?;
                        let key = serde_json::to_string(&(cases, &opts)).unwrap_or_default();
                        if !teacher_evals.contains_key(&key) {
                            tracing::info!(cases = cases.len(), "scoring eval cases on the teacher");
                            let r = score_cases(&teacher.loaded.model, tok, cases, &opts, &device)
                                .map_err(|e| UpcycleError::Eval(e.to_string()))?;
                            teacher_evals.insert(key.clone(), r);
                        }
                        let teacher_report = teacher_evals
                            .get(&key)
                            .cloned()
                            .ok_or_else(|| UpcycleError::Eval("the teacher's report was not kept".into()))?;
                        let student_report = score_cases(&model, tok, cases, &opts, &device)
                            .map_err(|e| UpcycleError::Eval(e.to_string()))?;
                        Some(EvalComparison {
                            teacher: teacher_report,
                            student: student_report,
                        })
                    }
                    _ => None,
                };
                let result = check(&run.id, spec, &v, eval);
                tracing::info!(run = %run.id, check = %result.check, passed = result.passed, "{}", result.detail);
                let stop = !result.passed && result.fail_fast;
                checks.push(result);
                if stop {
                    let last = checks.last().expect("just pushed");
                    return Err(UpcycleError::VerifyFailed {
                        run: run.id.clone(),
                        detail: last.detail.clone(),
                    });
                }
            }
        }
    }
    let model = LanguageModel::build(&target.model, student.vars.var_builder(dtype, &device))?;
    let fin = verify(
        &teacher.loaded.model,
        &teacher.loaded.spec,
        &model,
        &target.model,
        &held_out,
    )?;
    save_student(&student, &target.model, &target_dir.join("student"))?;
    if let Some(tok) = data_spec.tokenizer.as_deref().filter(|t| t.ends_with(".json")) {
        // The student speaks the teacher's tokenizer: keep it beside the weights for `generate`.
        let dst = target_dir.join("student").join("tokenizer.json");
        std::fs::copy(tok, &dst).map_err(|e| UpcycleError::Io {
            path: dst.clone(),
            source: e,
        })?;
    }
    let report = Report {
        manifest: compiled.manifest_path.display().to_string(),
        target: target.name.clone(),
        teacher: teacher_src.to_string(),
        dba_init: cfg.dba_init,
        device: device_name,
        dtype: crate::device::dtype_name(dtype).to_string(),
        git_revision: crate::record::git_revision(),
        summary: Summary {
            teacher_perplexity: fin.teacher_perplexity,
            student_perplexity: fin.student_perplexity,
            perplexity_ratio: fin.perplexity_ratio,
            initial_student_perplexity: initial.student_perplexity,
            teacher_kvcache_bytes_per_token: fin.teacher_kvcache_bytes_per_token,
            student_kvcache_bytes_per_token: fin.student_kvcache_bytes_per_token,
            kvcache_reduction: fin.kvcache_reduction,
            kvcache_precision: "f16 (2 bytes per cached value, both models)",
        },
        initial,
        phases,
        checks,
        verify: fin,
        wall_time_s: t0.elapsed().as_secs_f64(),
    };
    let artifacts_dir = target_dir.join("artifacts");
    let record = serde_json::to_value(&report).map_err(|e| UpcycleError::Serialize {
        what: "the upcycle report",
        detail: e.to_string(),
    })?;
    let (bench, outcome) = bench_report(compiled, target, &teacher, &model, dtype, &report, &device)?;
    super::artifacts::write(&bench, &record, &artifacts_dir)?;
    outcome.write_extras(&bench, &artifacts_dir)?;
    println!(
        "{}",
        crate::bench::table::report_tables(&bench, &outcome.generation, &outcome.behavior)
    );
    let path = artifacts_dir.join("report.json");
    print_summary(&report, &path);
    Ok(path)
}

/// Fingerprint of a run's checkpoints: the trainer's (student spec and recipe) plus the teacher,
/// the upcycle settings, the data and the run's length, so that a checkpoint of another upcycle
/// is refused instead of resumed.
fn run_fingerprint(
    model: &crate::model::ModelSpec,
    train: &crate::train::TrainSpec,
    teacher: &str,
    cfg: &super::UpcycleSpec,
    data: &DataSpec,
    steps: usize,
) -> String {
    // why: latency settings do not touch the weights; leave them out so they can change on resume.
    let weights_only = super::UpcycleSpec {
        latency_prompt_lens: Vec::new(),
        latency_gen_len: 0,
        latency_runs: 0,
        ..cfg.clone()
    };
    let text = serde_json::to_string(&(
        crate::train::fingerprint(model, train),
        teacher,
        &weights_only,
        &data.path,
        data.block_size,
        steps,
    ))
    .unwrap_or_default();
    format!("{:016x}", crate::model::init::seed_for(0, &text))
}

/// Perplexity from verification, then the target's `benchmarks:` on teacher and student (both
/// dense f32, interleaved where timed); without a `benchmarks:` block, the `upcycle:` latency
/// settings and exact KV bytes for fp16/q8_0/q4_0.
fn bench_report(
    compiled: &Compiled,
    target: &TargetPlan,
    teacher: &Teacher,
    student: &LanguageModel,
    student_dtype: DType,
    report: &Report,
    device: &candle_core::Device,
) -> Result<(crate::bench::Report, crate::bench::BenchOutcome), UpcycleError> {
    use crate::bench::{BenchContext, BenchModel, BenchmarkSpec, run_benchmarks, spec};
    use crate::cache::CacheKind;
    let cfg = &target.upcycle;
    let specs: Vec<BenchmarkSpec> = if target.benchmarks.is_empty() {
        let mut legacy = Vec::new();
        if !cfg.latency_prompt_lens.is_empty() {
            legacy.push(BenchmarkSpec::Latency(spec::LatencyBench {
                prompt_lens: cfg.latency_prompt_lens.clone(),
                gen_lens: vec![cfg.latency_gen_len.max(1)],
                batch_sizes: vec![1],
                warmup: 1,
                runs: cfg.latency_runs.max(1),
                cache_kinds: vec![CacheKind::Fp32],
            }));
        }
        legacy.push(BenchmarkSpec::Memory(spec::MemoryBench {
            seq_lens: vec![512, 1024, 2048, 4096, 8192],
            batch_sizes: vec![1],
            cache_kinds: vec![CacheKind::Fp16, CacheKind::Q8_0, CacheKind::Q4_0],
            measure: false,
        }));
        legacy
    } else {
        target.benchmarks.clone()
    };
    // why: the running teacher may compute on quantized blocks; benchmark it dense like the student.
    let opts = crate::loader::LoadOptions {
        dtype: DType::F32,
        device: device.clone(),
        dequantize: true,
        requantize: None,
    };
    let dense = crate::loader::load_source(&teacher.source, &opts)?;
    let params = |spec: &crate::model::ModelSpec| -> u64 { crate::compiler::ModelStats::of(spec).params * 4 };
    let models = [
        BenchModel {
            name: "teacher".into(),
            model: &dense.model,
            spec: &teacher.loaded.spec,
            tokenizer: teacher.loaded.tokenizer.as_ref(),
            max_seq_len: teacher.loaded.max_seq_len,
            model_bytes: params(&teacher.loaded.spec),
            device: device.clone(),
            dtype: DType::F32,
        },
        BenchModel {
            name: "student".into(),
            model: student,
            spec: &target.model,
            tokenizer: teacher.loaded.tokenizer.as_ref(),
            max_seq_len: teacher.loaded.max_seq_len,
            model_bytes: params(&target.model),
            device: device.clone(),
            dtype: student_dtype,
        },
    ];
    let data = with_teacher_tokenizer(&target.data, teacher)?;
    let ctx = BenchContext {
        held_out: Some((std::path::PathBuf::from(&data.path), data.val_frac.unwrap_or(0.1))),
        block_size: data.block_size,
        tokenizer: data.tokenizer.clone(),
        teacher_tokenizer: teacher_tokenizer_path(teacher).ok(),
    };
    let mut outcome = run_benchmarks(&specs, &models, &ctx)?;
    let mut meta = super::artifacts::metadata(
        &compiled.plan.name,
        &compiled.manifest_path.display().to_string(),
        &target.name,
        &report.device,
        student_dtype,
    );
    if let Some(rss) = crate::bench::memory::process_peak_rss() {
        meta.versions
            .insert("process_peak_rss_bytes".into(), rss.to_string());
    }
    let mut bench = crate::bench::Report {
        metadata: meta,
        perplexity: super::artifacts::perplexity_rows(&report.verify, target.data.block_size()),
        latency: Vec::new(),
        memory: Vec::new(),
        accuracy: Vec::new(),
        verify: serde_json::to_value(&report.verify).unwrap_or_default(),
    };
    outcome.extend_report(&mut bench);
    Ok((bench, outcome))
}

/// Data for an upcycle is tokenized with the teacher's tokenizer unless the manifest names one:
/// it is written once to the cache as `tokenizer.json` so `prepare` can use it.
pub fn with_teacher_tokenizer(
    data: &crate::data::TargetData,
    teacher: &Teacher,
) -> Result<DataSpec, UpcycleError> {
    let mut data = data
        .tokens()
        .ok_or_else(|| UpcycleError::Spec("an upcycle target trains on token data".into()))?
        .clone();
    if data.tokenizer.as_deref().is_some_and(|t| t != "teacher") {
        return Ok(data);
    }
    data.tokenizer = Some(teacher_tokenizer_path(teacher)?);
    Ok(data)
}

/// The teacher's tokenizer as a `tokenizer.json` in the cache (written on first use), for
/// `prepare`: the path as a tokenizer name.
pub fn teacher_tokenizer_path(teacher: &Teacher) -> Result<String, UpcycleError> {
    let tok = teacher.loaded.tokenizer.as_ref().ok_or_else(|| {
        UpcycleError::Spec("the teacher has no tokenizer; name one in `data.tokenizer`".into())
    })?;
    let name: String = teacher
        .loaded
        .path
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = crate::data::prepare::cache_dir()
        .join("tokenizers")
        .join(format!("{name}.json"));
    if !path.exists() {
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(|e| UpcycleError::Io {
            path: path.clone(),
            source: e,
        })?;
        tok.inner().save(&path, false).map_err(|e| UpcycleError::Write {
            what: format!("the teacher's tokenizer to {}", path.display()),
            detail: e.to_string(),
        })?;
    }
    Ok(path.display().to_string())
}

/// `model_spec.json` + `model.safetensors` (buffers included): a model source for `generate`.
fn save_student(student: &Student, spec: &crate::model::ModelSpec, dir: &Path) -> Result<(), UpcycleError> {
    std::fs::create_dir_all(dir).map_err(|e| UpcycleError::Io {
        path: dir.into(),
        source: e,
    })?;
    write_json(&dir.join("model_spec.json"), spec).map_err(|e| UpcycleError::Io {
        path: dir.into(),
        source: e.into_io(),
    })?;
    let tensors: HashMap<String, Tensor> = student
        .vars
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let path = dir.join("model.safetensors");
    let tmp = crate::record::temp_path(&path);
    if let Err(e) = candle_core::safetensors::save(&tensors, &tmp) {
        crate::record::discard(&tmp);
        return Err(e.into());
    }
    crate::record::commit(&tmp, &path).map_err(|e| UpcycleError::Io {
        path: dir.into(),
        source: e.into_io(),
    })
}

fn print_summary(r: &Report, path: &Path) {
    let s = &r.summary;
    println!("\nupcycle `{}` (teacher {})", r.target, r.teacher);
    println!("{:<34} {:>12} {:>12} {:>10}", "", "teacher", "student", "ratio");
    println!(
        "{:<34} {:>12.3} {:>12.3} {:>9.3}x",
        "perplexity (held-out)", s.teacher_perplexity, s.student_perplexity, s.perplexity_ratio
    );
    println!(
        "{:<34} {:>12} {:>12.3} {:>10}",
        "student perplexity after surgery", "", s.initial_student_perplexity, ""
    );
    println!(
        "{:<34} {:>12} {:>12} {:>9.2}x smaller",
        "KV cache bytes/token (f16)",
        s.teacher_kvcache_bytes_per_token,
        s.student_kvcache_bytes_per_token,
        s.kvcache_reduction
    );
    println!("report: {}", path.display());
}

/// The outcome of one `verify:` check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub run_id: String,
    pub check: String,
    pub passed: bool,
    pub fail_fast: bool,
    pub detail: String,
    /// Per-case results of an `eval` check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalComparison>,
}

/// Teacher and student on the same eval cases.
#[derive(Debug, Clone, Serialize)]
pub struct EvalComparison {
    pub teacher: EvalReport,
    pub student: EvalReport,
}

fn check(run_id: &str, spec: &VerifySpec, v: &Verification, eval: Option<EvalComparison>) -> CheckResult {
    let mut failures: Vec<String> = Vec::new();
    let mut limit = |what: &str, value: f64, max: Option<f64>| {
        if let Some(max) = max
            && !(value <= max)
        {
            failures.push(format!("{what} {value:.4} > {max}"));
        }
    };
    let (name, fail_fast) = match spec {
        VerifySpec::Compare {
            attention,
            logits,
            fail_fast,
        } => {
            if let Some(l) = attention {
                for layer in &v.attention {
                    limit(
                        &format!("attention[{}] mean L1", layer.slot),
                        layer.mean_l1,
                        l.max_mean_l1,
                    );
                    limit(
                        &format!("attention[{}] max L1", layer.slot),
                        layer.max_l1,
                        l.max_max_l1,
                    );
                }
            }
            if let Some(l) = logits {
                limit("logits mean L1", v.logits_mean_l1, l.max_mean_l1);
                limit("logits max L1", v.logits_max_l1, l.max_max_l1);
            }
            ("compare", *fail_fast)
        }
        VerifySpec::Fidelity {
            max_ppl_ratio,
            max_delta_nll,
            fail_fast,
        } => {
            limit("perplexity ratio", v.perplexity_ratio, *max_ppl_ratio);
            limit("delta nll", v.student_nll - v.teacher_nll, *max_delta_nll);
            ("fidelity", *fail_fast)
        }
        VerifySpec::Eval {
            thresholds,
            fail_fast,
            ..
        } => {
            match &eval {
                Some(e) => {
                    let (t, s) = (e.teacher.accuracy, e.student.accuracy);
                    limit("accuracy drop", t - s, thresholds.max_accuracy_drop);
                    if let Some(min) = thresholds.min_student_accuracy
                        && !(s >= min)
                    {
                        failures.push(format!("student accuracy {s:.3} < {min}"));
                    }
                }
                None => failures.push("no eval results".into()),
            }
            ("eval", *fail_fast)
        }
        VerifySpec::Kvcache {
            min_reduction,
            fail_fast,
        } => {
            if !(v.kvcache_reduction >= *min_reduction) {
                failures.push(format!(
                    "KV reduction {:.3}x < {min_reduction}x",
                    v.kvcache_reduction
                ));
            }
            ("kvcache", *fail_fast)
        }
    };
    let scores = eval
        .as_ref()
        .map(|e| {
            format!(
                " (teacher {}/{}, student {}/{})",
                e.teacher.correct, e.teacher.total, e.student.correct, e.student.total
            )
        })
        .unwrap_or_default();
    CheckResult {
        run_id: run_id.into(),
        check: name.into(),
        passed: failures.is_empty(),
        fail_fast,
        detail: if failures.is_empty() {
            format!("{name}: all limits met{scores}")
        } else {
            format!("{name}: {}{scores}", failures.join("; "))
        },
        eval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upcycle::spec::L1Limits;
    use crate::upcycle::verify::LayerDiff;

    fn verification(ppl_ratio: f64, layer_l1: f64, reduction: f64) -> Verification {
        Verification {
            batches: 1,
            tokens: 10,
            teacher_nll: 2.0,
            student_nll: 2.0 + ppl_ratio.ln(),
            teacher_perplexity: 2f64.exp(),
            student_perplexity: 2f64.exp() * ppl_ratio,
            perplexity_ratio: ppl_ratio,
            attention: vec![LayerDiff {
                slot: 0,
                mean_l1: layer_l1,
                max_l1: 4.0 * layer_l1,
            }],
            logits_mean_l1: 1.0,
            logits_max_l1: 9.0,
            teacher_kvcache_bytes_per_token: 200,
            student_kvcache_bytes_per_token: (200.0 / reduction) as usize,
            kvcache_reduction: reduction,
        }
    }

    #[test]
    fn checks_pass_and_fail_on_their_limits() {
        let v = verification(1.5, 0.2, 2.0);
        let fid = |max: f64| VerifySpec::Fidelity {
            max_ppl_ratio: Some(max),
            max_delta_nll: None,
            fail_fast: false,
        };
        assert!(check("r", &fid(1.6), &v, None).passed);
        let failed = check("r", &fid(1.4), &v, None);
        assert!(
            !failed.passed && failed.detail.contains("perplexity ratio"),
            "{}",
            failed.detail
        );
        let cmp = |mean: f64| VerifySpec::Compare {
            attention: Some(L1Limits {
                max_mean_l1: Some(mean),
                max_max_l1: None,
            }),
            logits: None,
            fail_fast: true,
        };
        assert!(check("r", &cmp(0.3), &v, None).passed);
        let failed = check("r", &cmp(0.1), &v, None);
        assert!(!failed.passed && failed.fail_fast && failed.detail.contains("attention[0]"));
        assert!(
            check(
                "r",
                &VerifySpec::Kvcache {
                    min_reduction: 2.0,
                    fail_fast: true
                },
                &v,
                None
            )
            .passed
        );
        assert!(
            !check(
                "r",
                &VerifySpec::Kvcache {
                    min_reduction: 2.5,
                    fail_fast: true
                },
                &v,
                None
            )
            .passed
        );
        // A NaN never passes a limit.
        assert!(!check("r", &fid(10.0), &verification(f64::NAN, 0.2, 2.0), None).passed);
    }
}
