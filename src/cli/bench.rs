//! `caramba bench KIND`: each benchmark on one model from the command line, with progress, a
//! table at the end, `--json` for machines and `--out DIR` for CSV + report.json; `bench
//! perplexity` measures through the chosen KV cache (`--cache-kind`, `auto` included).

use std::path::{Path, PathBuf};

use candle_core::DType;

use super::cache::{CacheArgs, resolve_auto};
use super::model::{ModelArgs, load_model, tokenizer};
use super::{CliError, emit, failed};
use crate::bench::spec::{
    AccuracyBench, BehaviorBench, BenchmarkSpec, GenerationBench, LatencyBench, MemoryBench,
};
use crate::bench::{BenchContext, BenchError, BenchModel, BenchOutcome, Report, run_benchmarks};
use crate::cache::CacheKind;
use crate::loader::LoadedModel;

/// `caramba bench …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Perplexity over non-overlapping windows of a text (.txt) or token (.npy) file.
    Perplexity(PerplexityArgs),
    /// Prefill, time to first token and decode tokens/s over prompt × generation × batch × cache.
    Latency(LatencyArgs),
    /// Exact KV-cache bytes and peak process memory per sequence length × batch × cache kind.
    Memory(MemoryArgs),
    /// Multiple-choice JSONL tasks scored by summed log-probability of each choice.
    Accuracy(AccuracyArgs),
    /// Greedy continuations of a prompts file, saved to generations.jsonl.
    Generation(GenerationArgs),
    /// A YAML suite of eval cases (exact_match_greedy, choice_logprob, int_greedy).
    Behavior(BehaviorArgs),
}

/// Output options of every `bench` subcommand but perplexity.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Print one JSON object (the report) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write report.json, the CSVs (and tables.tex, figures, report.html) into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths (random token ids), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub prompt_lens: Vec<usize>,
    /// Generated tokens per run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    pub gen_lens: Vec<usize>,
    /// Sequences per batch (above 1: left-padded batches), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch_sizes: Vec<usize>,
    /// Untimed runs per point.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed runs per point.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// KV cache kinds, comma-separated (fp32 is the plain f32 cache).
    #[arg(long, value_delimiter = ',', default_value = "fp32")]
    pub cache_kinds: Vec<CacheKind>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cached sequence lengths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "512,1024,2048,4096")]
    pub seq_lens: Vec<usize>,
    /// Sequences per batch, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch_sizes: Vec<usize>,
    /// KV cache kinds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "fp16,q8_0,q4_0")]
    pub cache_kinds: Vec<CacheKind>,
    /// Only compute exact KV bytes from the topology (no prefill, no peak).
    #[arg(long)]
    pub no_measure: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AccuracyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A JSONL task: {"prompt": …, "choices": […], "answer": index} per line (repeatable).
    #[arg(long = "task", required = true)]
    pub tasks: Vec<PathBuf>,
    /// Score at most this many questions per task.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenerationArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// One prompt per line, or .jsonl (a JSON string or {"prompt": …} per line).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Most tokens per prompt (greedy).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BehaviorArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The YAML suite of eval cases.
    #[arg(long)]
    pub suite: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// A UTF-8 text file (tokenized with the model's tokenizer) or a 1-D .npy of token ids.
    #[arg(long)]
    pub data: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    pub block_size: usize,
    /// Evaluate at most this many windows.
    #[arg(long)]
    pub max_blocks: Option<usize>,
    /// Also compare the cache with one stored as this kind (e.g. fp16): Δnll, perplexity ratio
    /// and mean KL(baseline ‖ cache) of the next-token distributions.
    #[arg(long)]
    pub kl_baseline: Option<crate::cache::CacheKind>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn path_string(p: &Path) -> String {
    p.display().to_string()
}

/// Run `caramba bench KIND`.
pub fn run(cmd: &BenchCommand) -> Result<(), CliError> {
    let (model, output, spec) = match cmd {
        BenchCommand::Perplexity(args) => return perplexity(args),
        BenchCommand::Latency(a) => (
            &a.model,
            &a.output,
            BenchmarkSpec::Latency(LatencyBench {
                prompt_lens: a.prompt_lens.clone(),
                gen_lens: a.gen_lens.clone(),
                batch_sizes: a.batch_sizes.clone(),
                warmup: a.warmup,
                runs: a.runs,
                cache_kinds: a.cache_kinds.clone(),
            }),
        ),
        BenchCommand::Memory(a) => (
            &a.model,
            &a.output,
            BenchmarkSpec::Memory(MemoryBench {
                seq_lens: a.seq_lens.clone(),
                batch_sizes: a.batch_sizes.clone(),
                cache_kinds: a.cache_kinds.clone(),
                measure: !a.no_measure,
            }),
        ),
        BenchCommand::Accuracy(a) => (
            &a.model,
            &a.output,
            BenchmarkSpec::Accuracy(AccuracyBench {
                tasks: a.tasks.iter().map(|p| path_string(p)).collect(),
                limit: a.limit,
            }),
        ),
        BenchCommand::Generation(a) => (
            &a.model,
            &a.output,
            BenchmarkSpec::Generation(GenerationBench {
                prompts: path_string(&a.prompts),
                max_new_tokens: a.max_new_tokens,
            }),
        ),
        BenchCommand::Behavior(a) => (
            &a.model,
            &a.output,
            BenchmarkSpec::Behavior(BehaviorBench {
                suite: path_string(&a.suite),
            }),
        ),
    };
    if let Some(p) = spec.problems().first() {
        return Err(CliError::usage(miette::miette!(
            help = p.help.clone(),
            "--{}: {}",
            p.field.replace('_', "-"),
            p.message
        )));
    }
    let loaded = load_model(&model.model, &model.resolve()?)?;
    let name = model.model.clone();
    let bench_model = BenchModel::from_loaded(name, &loaded);
    let outcome = run_benchmarks(
        std::slice::from_ref(&spec),
        std::slice::from_ref(&bench_model),
        &BenchContext::default(),
    )
    .map_err(cli_error)?;
    finish(&spec, &bench_model, outcome, output)
}

fn cli_error(e: BenchError) -> CliError {
    if e.is_usage() {
        CliError::usage(e)
    } else {
        CliError::failed(e)
    }
}

/// Build the report; write it where asked; print tables or JSON.
fn finish(
    spec: &BenchmarkSpec,
    m: &BenchModel,
    mut outcome: BenchOutcome,
    output: &OutputArgs,
) -> Result<(), CliError> {
    let mut report = Report {
        metadata: crate::bench::metadata::metadata(
            &format!("bench {}", spec.kind()),
            "",
            spec.kind(),
            &crate::device::describe(&m.device),
            crate::device::dtype_name(m.dtype),
        ),
        perplexity: Vec::new(),
        latency: Vec::new(),
        memory: Vec::new(),
        accuracy: Vec::new(),
        verify: serde_json::Value::Null,
    };
    outcome.extend_report(&mut report);
    if let Some(dir) = &output.out {
        crate::bench::artifacts::write_all(&report, dir)
            .map_err(|e| CliError::failed(miette::miette!("{e}")))?;
        outcome.write_extras(&report, dir).map_err(cli_error)?;
        tracing::info!("wrote {}", dir.display());
    } else if !outcome.generation.is_empty() {
        // why: generations are the benchmark's product; without --out they still land in a file.
        let path = Path::new("generations.jsonl");
        crate::bench::generation::write_jsonl(path, &outcome.generation).map_err(cli_error)?;
        tracing::info!("wrote {}", path.display());
    }
    let text = if output.json {
        let mut v = serde_json::to_value(&report).map_err(|e| CliError::failed(miette::miette!("{e}")))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "generation".into(),
                serde_json::to_value(&outcome.generation).unwrap_or_default(),
            );
            obj.insert(
                "behavior".into(),
                serde_json::to_value(&outcome.behavior).unwrap_or_default(),
            );
        }
        format!("{v}\n")
    } else {
        crate::bench::table::report_tables(&report, &outcome.generation, &outcome.behavior)
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::failed(miette::miette!("writing to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Run `caramba bench perplexity`.
fn perplexity(args: &PerplexityArgs) -> Result<(), CliError> {
    let cache = args.cache.resolve();
    let loaded = load_model(&args.model.model, &args.model.resolve()?)?;
    let tokens = read_tokens(&args.data, &loaded)?;
    // why: every use below (and the report's label) sees what `auto` chose, not the flags.
    let cache = resolve_auto(&cache, &loaded)?;
    let result = crate::infer::perplexity::perplexity_through_cache(
        &loaded.model,
        &tokens,
        args.block_size.min(loaded.max_seq_len),
        args.max_blocks,
        &loaded.device,
        cache.kinds,
    )
    .map_err(failed)?;
    let quality = match (args.kl_baseline, cache.kinds) {
        (Some(base), Some(_)) => Some(
            crate::infer::cache_quality::compare_caches(
                &loaded.model,
                &tokens,
                args.block_size.min(loaded.max_seq_len),
                args.max_blocks,
                &loaded.device,
                &|| {
                    crate::model::KvCache::quantized(
                        loaded.model.n_slots(),
                        crate::model::QuantKinds::uniform(base),
                    )
                },
                &|| cache.cache_or_plain(&loaded.model),
            )
            .map_err(failed)?,
        ),
        (Some(_), None) => {
            return Err(CliError::usage(miette::miette!(
                help = "add --cache-kind (or --k-cache / --v-cache) to name the cache to compare",
                "--kl-baseline needs a cache to compare with the baseline"
            )));
        }
        _ => None,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(result).map_err(failed)?;
        if let Some(q) = quality {
            v["vs_baseline"] = serde_json::to_value(q).map_err(failed)?;
        }
        v["model"] = serde_json::json!(loaded.path);
        v["data"] = serde_json::json!(args.data);
        v["block_size"] = serde_json::json!(args.block_size);
        v["cache"] = serde_json::json!(cache.label());
        emit(&mut out, &format!("{v}\n"))?;
    } else {
        emit(
            &mut out,
            &format!(
                "perplexity: {:.4}\nnll: {:.6}\ntokens: {}\nblocks: {}\ntokens_per_sec: {:.1}\n",
                result.perplexity,
                result.nll,
                result.tokens,
                result.blocks,
                (result.tokens + result.blocks) as f64 / result.seconds.max(1e-9)
            ),
        )?;
        if let Some(q) = quality {
            emit(
                &mut out,
                &format!(
                    "vs baseline: delta_nll {:+.6} ppl_ratio {:.5} mean_kl {:.6} max_kl {:.4}\n",
                    q.delta_nll, q.ppl_ratio, q.mean_kl, q.max_kl
                ),
            )?;
        }
    }
    Ok(())
}

fn read_tokens(path: &Path, loaded: &LoadedModel) -> Result<Vec<u32>, CliError> {
    if path.extension().is_some_and(|e| e == "npy") {
        let t = candle_core::Tensor::read_npy(path).map_err(|e| {
            CliError::usage(miette::miette!(
                "{}: not a readable .npy of token ids: {e}",
                path.display()
            ))
        })?;
        let t = t
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::U32))
            .map_err(failed)?;
        return t.to_vec1::<u32>().map_err(failed);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(miette::miette!("{}: cannot read: {e}", path.display())))?;
    tokenizer(loaded)?.encode(&text, false).map_err(failed)
}
