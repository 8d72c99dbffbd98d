//! `caramba run`: compile, pick the target, prepare its data, then train each run in order.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::RunError;
use super::run_dir::RunDir;
use crate::compiler::{self, Compiled, TargetPlan};
use crate::data::ensure_prepared;
use crate::manifest::{RunMode, TrainerKind};
use crate::record::write_json;
use crate::train::{TrainOptions, TrainSummary};

/// What `caramba run` is asked (resolved from its flags by `cli::run`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Manifest file (.yml, .yaml or .json).
    pub manifest: PathBuf,
    /// Target or entry point to run; `None`: `entrypoints.default`, else the first target.
    pub target: Option<String>,
    /// Validate and print the plan without running anything.
    pub dry_run: bool,
    /// Ignore existing checkpoints and start every run from step 0.
    pub fresh: bool,
    /// Root of the run directories.
    pub runs_dir: PathBuf,
    /// Override every run's device (`cpu`, `cuda`, `cuda:N`, `metal`).
    pub device: Option<String>,
    /// Override every run's seed (the original's `--seed`).
    pub seed: Option<u64>,
    /// Override the target's token file (the original's `--data`).
    pub data: Option<PathBuf>,
    /// Only the runs labelled `exp: X` (the original's `--exp`).
    pub exp: Option<String>,
    /// Make every run sample or chat (the original's `--mode sample|chat`) instead of what the
    /// manifest says.
    pub mode: Option<RunMode>,
    /// With `mode`: the model to load (the original's `--ckpt`).
    pub ckpt: Option<String>,
}

impl RunOptions {
    /// `caramba run MANIFEST` with nothing else set.
    pub fn new(manifest: PathBuf) -> Self {
        Self {
            manifest,
            target: None,
            dry_run: false,
            fresh: false,
            runs_dir: PathBuf::from("runs"),
            device: None,
            seed: None,
            data: None,
            exp: None,
            mode: None,
            ckpt: None,
        }
    }
}

/// The target as the original's legacy flags change it: `--exp` picks runs, `--seed`, `--data`,
/// `--mode` and `--ckpt` override what the manifest says.
fn with_overrides(target: &TargetPlan, args: &RunOptions) -> Result<TargetPlan, RunError> {
    let mut t = target.clone();
    if let Some(exp) = &args.exp {
        t.runs.retain(|r| r.exp.as_deref() == Some(exp.as_str()));
        if t.runs.is_empty() {
            let labels: Vec<&str> = target.runs.iter().filter_map(|r| r.exp.as_deref()).collect();
            return Err(RunError::usage(miette::miette!(
                help = if labels.is_empty() {
                    "label runs with `exp: NAME` in the manifest".to_string()
                } else {
                    format!("labels in this target: {}", labels.join(", "))
                },
                "--exp {exp}: no run of target `{}` is labelled `exp: {exp}`",
                target.name
            )));
        }
    }
    for r in &mut t.runs {
        if let Some(seed) = args.seed {
            r.seed = seed;
        }
        if let Some(mode) = args.mode {
            r.mode = mode;
            if !mode.is_train() {
                r.generate.get_or_insert_with(Default::default);
                if args.ckpt.is_some() {
                    r.ckpt = args.ckpt.clone();
                }
            }
        }
    }
    if let Some(path) = &args.data {
        match t.data.tokens_mut() {
            Some(d) => d.path = path.display().to_string(),
            None => {
                return Err(RunError::usage(miette::miette!(
                    "--data: target `{}` reads arrays (`type: npy_supervised`), not a token file",
                    target.name
                )));
            }
        }
    }
    Ok(t)
}

/// What `summary.json` of a finished run holds.
#[derive(Debug, Serialize)]
struct RunRecord<'a> {
    run_id: &'a str,
    steps: usize,
    final_loss: f64,
    val_loss: Option<f64>,
    tokens_per_sec: f64,
    wall_time_s: f64,
    resumed_from: Option<usize>,
    checkpoint: Option<String>,
}

pub fn run(args: &RunOptions) -> Result<(), RunError> {
    let compiled = compiler::compile(&args.manifest).map_err(RunError::usage)?;
    if let Some(process) = compiled.process(args.target.as_deref()) {
        return run_process(&compiled, process, args);
    }
    let target = compiled
        .run_target(args.target.as_deref())
        .map_err(RunError::usage)?;
    let overridden = with_overrides(target, args)?;
    let target = &overridden;
    if args.dry_run {
        // why: the plan shown is the one that would run, legacy overrides (`--mode`, `--exp`,
        // `--seed`, `--data`) included.
        let mut shown = compiled.clone();
        if let Some(t) = shown.plan.targets.iter_mut().find(|t| t.name == target.name) {
            *t = target.clone();
        }
        println!("{}", compiler::render_plan(&shown));
        let n = target.runs.len();
        println!(
            "dry run: would run target `{}` ({n} run{}); nothing was written",
            target.name,
            if n == 1 { "" } else { "s" }
        );
        return Ok(());
    }
    if target.trainer == TrainerKind::Upcycle {
        crate::upcycle::run_upcycle(
            &compiled,
            target,
            &args.runs_dir,
            args.device.as_deref(),
            args.fresh,
        )
        .map_err(|e| match &e {
            crate::upcycle::UpcycleError::Mismatch(_) | crate::upcycle::UpcycleError::Spec(_) => {
                RunError::usage(e)
            }
            crate::upcycle::UpcycleError::Train(t) => RunError {
                code: t.exit_code(),
                report: e.into(),
            },
            _ => RunError::failed(e),
        })?;
        return Ok(());
    }
    if target.system.is_classifier() {
        return super::classifier::run_classifier(&compiled, target, args);
    }
    let data = target.data.tokens().ok_or_else(|| {
        RunError::usage(miette::miette!(
            "target `{}`: system `{}` needs token data",
            target.name,
            target.system
        ))
    })?;
    let summaries = train_target(&compiled, target, data, args)?;
    if !summaries.is_empty() {
        print_table(&target.name, &summaries);
    }
    if !target.benchmarks.is_empty() {
        benchmark_runs(&compiled, target, data, &summaries, args)?;
    }
    Ok(())
}

/// A process target (an agent): its outputs go to `runs/<name>/<target>/`.
fn run_process(
    compiled: &Compiled,
    process: &crate::agents::ProcessTarget,
    args: &RunOptions,
) -> Result<(), RunError> {
    if args.dry_run {
        println!("{}", compiler::render_plan(&compiled));
        println!(
            "dry run: would run process `{}` ({}); nothing was written",
            process.name,
            process.process.kind()
        );
        return Ok(());
    }
    let outcome =
        crate::agents::run_process(&compiled.plan.name, process, &args.runs_dir).map_err(|e| RunError {
            code: e.exit_code(),
            report: e.into(),
        })?;
    let budget = &outcome.summary["budget"];
    println!(
        "\nprocess `{}` ({}): {} requests, {} prompt + {} completion tokens, {:.1} s",
        process.name,
        process.process.kind(),
        budget["calls"],
        budget["prompt_tokens"],
        budget["completion_tokens"],
        budget["wall_time_s"].as_f64().unwrap_or_default()
    );
    println!("result: {}", outcome.summary["result"]);
    println!("run directory: {}", outcome.dir.display());
    Ok(())
}

/// The target's `benchmarks:` on the trained model of every run (each run directory is a model
/// source); artifacts in `runs/<name>/<target>/artifacts/`.
fn benchmark_runs(
    compiled: &Compiled,
    target: &TargetPlan,
    data: &crate::data::DataSpec,
    runs: &[(String, TrainSummary, RunDir)],
    args: &RunOptions,
) -> Result<(), RunError> {
    use crate::bench::{BenchContext, BenchModel, Report, run_benchmarks};
    let device_name = args
        .device
        .clone()
        .or_else(|| target.runs.first().map(|r| r.train.device.clone()))
        .unwrap_or_else(|| "cpu".into());
    let device = crate::train::parse_device(&device_name).map_err(RunError::usage)?;
    let opts = crate::loader::LoadOptions {
        device,
        ..crate::loader::LoadOptions::default()
    };
    let loaded = runs
        .iter()
        .map(|(id, _, dir)| {
            crate::loader::load(&dir.root.display().to_string(), &opts)
                .map(|l| (id.clone(), l))
                .map_err(RunError::failed)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let models: Vec<BenchModel> = loaded
        .iter()
        .map(|(id, l)| BenchModel::from_loaded(id.clone(), l))
        .collect();
    let ctx = BenchContext {
        held_out: Some((PathBuf::from(&data.path), data.val_frac.unwrap_or(0.1))),
        block_size: data.block_size,
        tokenizer: Some(data.tokenizer.clone().unwrap_or_else(|| "bytes".into())),
        teacher_tokenizer: None,
    };
    let bench_err = |e: crate::bench::BenchError| {
        if e.is_usage() {
            RunError::usage(e)
        } else {
            RunError::failed(e)
        }
    };
    let mut outcome = run_benchmarks(&target.benchmarks, &models, &ctx).map_err(bench_err)?;
    let mut report = Report {
        metadata: crate::bench::metadata::metadata(
            &compiled.plan.name,
            &compiled.manifest_path.display().to_string(),
            &target.name,
            &device_name,
            crate::device::dtype_name(opts.dtype),
        ),
        perplexity: Vec::new(),
        latency: Vec::new(),
        memory: Vec::new(),
        accuracy: Vec::new(),
        verify: serde_json::Value::Null,
    };
    outcome.extend_report(&mut report);
    let dir = args
        .runs_dir
        .join(&compiled.plan.name)
        .join(&target.name)
        .join("artifacts");
    crate::bench::artifacts::write_all(&report, &dir)
        .map_err(|e| RunError::failed(miette::miette!("{e}")))?;
    outcome.write_extras(&report, &dir).map_err(bench_err)?;
    println!(
        "\n{}",
        crate::bench::table::report_tables(&report, &outcome.generation, &outcome.behavior)
    );
    println!("artifacts: {}", dir.display());
    Ok(())
}

fn train_target(
    compiled: &Compiled,
    target: &TargetPlan,
    spec: &crate::data::DataSpec,
    args: &RunOptions,
) -> Result<Vec<(String, TrainSummary, RunDir)>, RunError> {
    let val_frac = spec.val_frac.unwrap_or(0.1);
    let tokenizer = spec.tokenizer.clone().unwrap_or_else(|| "bytes".into());
    let data = ensure_prepared(spec, val_frac, &tokenizer).map_err(|e| {
        if e.is_usage() {
            RunError::usage(e)
        } else {
            RunError::failed(e)
        }
    })?;
    let mut out = Vec::new();
    for run in &target.runs {
        if !run.mode.is_train() {
            // why: in order, so a sampling run after a training run sees its model.
            super::sample::sample_or_chat(compiled, target, run, &args.runs_dir, args.device.as_deref())?;
            continue;
        }
        let mut run = run.clone();
        if let Some(device) = &args.device {
            run.train.device = device.clone();
        }
        let dir = RunDir::for_run(&args.runs_dir, &compiled.plan.name, &target.name, &run.id);
        // why: held from the header to summary.json, so a second `caramba run` on this run
        // directory exits 1 naming this process instead of interleaving its record with ours.
        let _lock = crate::record::DirLock::acquire(&dir.root).map_err(RunError::failed)?;
        dir.write_header(compiled, target, &run).map_err(|e| {
            RunError::failed(miette::miette!(
                "cannot write run directory {}: {e}",
                dir.root.display()
            ))
        })?;
        tracing::info!(run = %run.id, dir = %dir.root.display(), steps = run.steps, seed = run.seed, "training");
        let mut opts = TrainOptions::new(&target.model, &run.train, run.steps, run.seed, &dir.root);
        opts.fresh = args.fresh;
        let summary =
            crate::train::run(&target.model, &run.train, &data.dataset, opts).map_err(|e| RunError {
                code: e.exit_code(),
                report: e.into(),
            })?;
        publish_final_weights(&dir, &summary)?;
        if let Some(tok) = spec.tokenizer.as_deref().filter(|t| t.ends_with(".json")) {
            let dst = dir.root.join("tokenizer.json");
            std::fs::copy(tok, &dst).map_err(|e| {
                RunError::failed(miette::miette!("cannot copy {tok} to {}: {e}", dst.display()))
            })?;
        }
        let record = RunRecord {
            run_id: &run.id,
            steps: summary.steps,
            final_loss: summary.final_loss,
            val_loss: summary.val_loss,
            tokens_per_sec: summary.tokens_per_sec,
            wall_time_s: summary.wall_time_s,
            resumed_from: summary.resumed_from,
            checkpoint: summary.checkpoint.as_ref().map(|p| p.display().to_string()),
        };
        write_json(&dir.root.join("summary.json"), &record)
            .map_err(|e| RunError::failed(miette::miette!("cannot write summary.json: {e}")))?;
        out.push((run.id.clone(), summary, dir));
    }
    Ok(out)
}

/// Copy the last checkpoint's weights to `<run>/model.safetensors` (beside `model_spec.json`), so
/// the run directory itself is a model source for `generate`, `bench` and teachers.
fn publish_final_weights(dir: &RunDir, summary: &TrainSummary) -> Result<(), RunError> {
    publish_checkpoint(dir, summary.checkpoint.as_deref())
}

/// Copy `ckpt`'s weights to `<run>/model.safetensors` (nothing without a checkpoint).
pub(super) fn publish_checkpoint(dir: &RunDir, ckpt: Option<&Path>) -> Result<(), RunError> {
    let Some(ckpt) = ckpt else {
        return Ok(());
    };
    let src = ckpt.join("model.safetensors");
    let dst = dir.root.join("model.safetensors");
    let tmp = crate::record::temp_path(&dst);
    std::fs::copy(&src, &tmp)
        .map_err(|e| {
            crate::record::discard(&tmp);
            crate::record::RecordError::Io {
                path: tmp.clone(),
                source: e,
            }
        })
        .and_then(|_| crate::record::commit(&tmp, &dst))
        .map_err(|e| {
            RunError::failed(miette::miette!(
                "cannot publish {} as {}: {e}",
                src.display(),
                dst.display()
            ))
        })
}

fn print_table(target: &str, rows: &[(String, TrainSummary, RunDir)]) {
    println!("\ntarget `{target}`");
    println!(
        "{:<16} {:>7} {:>10} {:>10} {:>12} {:>9}  run directory",
        "run", "steps", "loss", "val loss", "tokens/s", "wall s"
    );
    for (id, s, dir) in rows {
        let val = s.val_loss.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!(
            "{:<16} {:>7} {:>10.4} {:>10} {:>12.0} {:>9.1}  {}",
            id,
            s.steps,
            s.final_loss,
            val,
            s.tokens_per_sec,
            s.wall_time_s,
            display(&dir.root)
        );
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
