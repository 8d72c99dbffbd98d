//! The inference commands: `caramba generate`, `caramba chat`, `caramba bench perplexity` and
//! `caramba fetch` — arguments, and what each does with them.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use candle_core::DType;

use super::{ChatTemplate, GenerateConfig, Generator, Message, SamplingParams, StopReason, TextStream};
use crate::cli::CliError;
use crate::loader::{LoadOptions, LoadedModel, TextTokenizer, fetch, load};

/// KV cache storage options of `generate`, `chat` and `bench perplexity`.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// KV cache storage for K and V: fp32, fp16, bf16, q8_0, q4_0, nf4, or `auto` (measured: see
    /// docs/inference.md). Default: the plain f32 cache.
    #[arg(long)]
    pub cache_kind: Option<super::cache_policy::CacheKindArg>,
    /// Storage of keys only (overrides --cache-kind for K).
    #[arg(long)]
    pub k_cache: Option<crate::cache::CacheKind>,
    /// Storage of values only (overrides --cache-kind for V).
    #[arg(long)]
    pub v_cache: Option<crate::cache::CacheKind>,
    /// Rotate keys by an orthogonal Hadamard transform before quantizing (undone on the query side).
    #[arg(long)]
    pub rotate_k: bool,
    /// Store quantized keys as they are, without subtracting each head's mean key first.
    #[arg(long)]
    pub no_center_k: bool,
    /// Rotate values by an orthogonal Hadamard transform before quantizing (undone after the
    /// weighted sum).
    #[arg(long)]
    pub rotate_v: bool,
    /// Keep the K/V of the first N attention layers in fp16 whatever the storage kind.
    #[arg(long, default_value_t = 0)]
    pub fp16_prefix_layers: usize,
    #[command(flatten)]
    pub auto: super::cache_policy::AutoCacheArgs,
}

impl CacheArgs {
    /// `None`: the plain cache; otherwise the storage kinds.
    pub fn kinds(&self) -> Option<crate::model::QuantKinds> {
        use crate::cache::CacheKind;
        if self.cache_kind.is_none()
            && self.k_cache.is_none()
            && self.v_cache.is_none()
            && !self.rotate_k
            && !self.rotate_v
        {
            return None;
        }
        let base = match self.cache_kind {
            Some(super::cache_policy::CacheKindArg::Kind(k)) => k,
            _ => CacheKind::Fp16,
        };
        Some(crate::model::QuantKinds {
            k: self.k_cache.unwrap_or(base),
            v: self.v_cache.unwrap_or(base),
            k_geo: None,
            rotate_k: self.rotate_k,
            center_k: !self.no_center_k,
            rotate_v: self.rotate_v,
        })
    }

    fn cache_for(&self, model: &crate::model::LanguageModel) -> Option<crate::model::KvCache> {
        self.kinds().map(|k| {
            let mut cache = crate::model::KvCache::quantized(model.n_slots(), k);
            cache.fp16_prefix_slots = self.fp16_prefix_layers;
            cache
        })
    }

    /// The cache these options describe, or the plain f32 one.
    pub fn cache_or_plain(&self, model: &crate::model::LanguageModel) -> crate::model::KvCache {
        self.cache_for(model)
            .unwrap_or_else(|| crate::model::KvCache::new(model.n_slots(), DType::F32))
    }
}

/// Options shared by every command that loads a model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// The model: a .gguf file, an HF directory (config.json + safetensors + tokenizer.json),
    /// `hf:org/name[@rev]`, a caramba run/checkpoint directory, or a fetched name (smollm2-135m).
    #[arg(long, short = 'm')]
    pub model: String,
    /// Expand GGUF quantized weights to f32 instead of computing on the quantized blocks.
    #[arg(long)]
    pub dequantize: bool,
    /// Re-quantize GGUF matrices stored as Q4_1/Q5_0/Q5_1 (no candle SIMD kernel) at load to this
    /// type (q8_0, q4_0, q4k, q6k), or keep them as stored (`native`; Q4_1 then runs on caramba's
    /// own AVX-512 VNNI kernel where the CPU has one).
    #[arg(long, default_value = "native")]
    pub requantize: String,
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
}

impl ModelArgs {
    /// Load the model these options name.
    pub fn load(&self) -> Result<LoadedModel, CliError> {
        use candle_core::quantized::GgmlDType;
        let requantize = match self.requantize.to_ascii_lowercase().as_str() {
            "native" | "none" => None,
            "q8_0" => Some(GgmlDType::Q8_0),
            "q4_0" => Some(GgmlDType::Q4_0),
            "q4k" | "q4_k" => Some(GgmlDType::Q4K),
            "q6k" | "q6_k" => Some(GgmlDType::Q6K),
            other => {
                return Err(CliError::usage(miette::miette!(
                    help = "one of: native, q8_0, q4_0, q4k, q6k",
                    "--requantize {other}: unknown block type"
                )));
            }
        };
        let (device, dtype) = self.device.resolve().map_err(CliError::usage)?;
        let opts = LoadOptions {
            dequantize: self.dequantize,
            requantize,
            device,
            dtype,
        };
        let started = std::time::Instant::now();
        let loaded = load(&self.model, &opts).map_err(CliError::usage)?;
        tracing::info!(
            "loaded {} ({:.1} MB of weights) in {:.2}s on {} as {}",
            loaded.path.display(),
            loaded.weight_bytes as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            crate::device::describe(&loaded.device),
            crate::device::dtype_name(loaded.dtype),
        );
        Ok(loaded)
    }
}

/// Sampling options shared by `generate` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, short = 't', default_value_t = 0.0)]
    pub temperature: f64,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens that reach probability p.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Penalise tokens already in the sequence (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this string (repeatable); the string is not printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub(super) fn config(&self, tok: &TextTokenizer) -> GenerateConfig {
        GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
            },
            eos_token_ids: tok.eos_token_ids.clone(),
        }
    }
}

/// `caramba generate`: continue a prompt, printing the text as it streams.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// The prompt text.
    #[arg(long, short = 'p')]
    pub prompt: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: super::speculative_cmd::SpecArgs,
    /// Print one JSON object (text, token ids, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

/// `caramba chat`: an interactive conversation using the model's chat template.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// A system message opening the conversation.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// `caramba bench …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Perplexity over non-overlapping windows of a text (.txt) or token (.npy) file.
    Perplexity(PerplexityArgs),
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

/// `caramba fetch NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// A known model name (smollm2-135m).
    pub name: String,
}

fn tokenizer(loaded: &LoadedModel) -> Result<&TextTokenizer, CliError> {
    loaded.tokenizer.as_ref().ok_or_else(|| {
        CliError::usage(miette::miette!(
            help = "put the model's tokenizer.json next to model_spec.json (or in its run directory)",
            "{}: this model has no tokenizer",
            loaded.path.display()
        ))
    })
}

/// Write to stdout; a closed pipe (`| head`) ends the command quietly.
pub(super) fn emit(out: &mut impl Write, text: &str) -> Result<bool, CliError> {
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::failed(miette::miette!("writing to stdout: {e}"))),
    }
}

pub(super) fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::failed(miette::miette!("{e}"))
}

/// Run `caramba generate`.
pub fn generate(args: &GenerateArgs) -> Result<(), CliError> {
    let loaded = args.model.load()?;
    let tok = tokenizer(&loaded)?;
    let prompt = tok.encode(&args.prompt, true).map_err(CliError::usage)?;
    if prompt.len() >= loaded.max_seq_len {
        return Err(CliError::usage(super::GenerateError::ContextOverflow {
            needed: prompt.len() + 1,
            max: loaded.max_seq_len,
        }));
    }
    if let Some(draft) = &args.spec.draft {
        return super::speculative_cmd::generate(args, draft, &loaded, tok, &prompt);
    }
    let cfg = args.sampling.config(tok);
    let cache_args = super::cache_policy::resolve(&args.cache, &loaded)?;
    let pad = tok.eos_token_ids.first().copied().unwrap_or(0);
    let mut generator =
        Generator::new(&loaded.model, loaded.max_seq_len, loaded.dtype, &loaded.device).with_pad_id(pad);
    if let Some(cache) = cache_args.cache_for(&loaded.model) {
        generator = generator.with_cache(cache);
    }
    let mut text = TextStream::new(tok, args.sampling.stop.clone());
    let mut out = std::io::stdout().lock();
    let mut ids = Vec::new();
    let mut stream = generator.stream(&prompt, &cfg);
    let mut open = true;
    while let Some(t) = stream.next() {
        let t = t.map_err(failed)?;
        ids.push(t);
        let delta = text.push(t).map_err(failed)?;
        if !args.json && open {
            open = emit(&mut out, &delta)?;
        }
        if text.stopped() {
            stream.stop(StopReason::StopString);
        }
        if !open {
            return Ok(());
        }
    }
    let stats = stream.stats();
    let reason = stream.stop_reason();
    let tail = text.finish();
    if args.json {
        let json = serde_json::json!({
            "text": text.text(),
            "token_ids": ids,
            "prompt_tokens": prompt.len(),
            "generated_tokens": ids.len(),
            "stop_reason": reason,
            "prefill_ms": stats.prefill.as_secs_f64() * 1e3,
            "prefill_tokens_per_sec": stats.prefill_tokens as f64 / stats.prefill.as_secs_f64().max(1e-9),
            "decode_tokens_per_sec": stats.decode_tokens_per_sec(),
            "model": loaded.path,
        });
        emit(&mut out, &format!("{json}\n"))?;
    } else {
        emit(&mut out, &format!("{tail}\n"))?;
        tracing::info!(
            "{} prompt tokens in {:.0} ms; {} tokens at {:.1} tok/s",
            prompt.len(),
            stats.prefill.as_secs_f64() * 1e3,
            ids.len(),
            stats.decode_tokens_per_sec()
        );
    }
    Ok(())
}

/// Run `caramba chat`: one user message per input line; `/reset` starts over, `/exit` (or end of
/// input) quits. The conversation stays in the KV cache: each turn feeds only what is new.
pub fn chat(args: &ChatArgs) -> Result<(), CliError> {
    let loaded = args.model.load()?;
    let tok = tokenizer(&loaded)?;
    let Some(source) = tok.chat_template.as_deref() else {
        return Err(CliError::usage(miette::miette!(
            help = "use `caramba generate --prompt` for models without one",
            "{}: the model has no chat template",
            loaded.path.display()
        )));
    };
    let name = |id: Option<u32>| id.and_then(|i| tok.token(i)).unwrap_or_default();
    let template = ChatTemplate::new(
        source,
        &name(tok.bos_token_id),
        &name(tok.eos_token_ids.first().copied()),
    )
    .map_err(CliError::usage)?;
    let cfg = args.sampling.config(tok);
    let cache_args = super::cache_policy::resolve(&args.cache, &loaded)?;
    let mut generator = Generator::new(&loaded.model, loaded.max_seq_len, loaded.dtype, &loaded.device);
    if let Some(cache) = cache_args.cache_for(&loaded.model) {
        generator = generator.with_cache(cache);
    }
    let opening: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message::new("system", s.clone()))
        .collect();
    let mut messages = opening.clone();
    let interactive = std::io::stdin().is_terminal();
    let mut out = std::io::stdout().lock();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| failed(format!("reading stdin: {e}")))?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = opening.clone();
                generator.reset();
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", line));
        let text = template.render(&messages, true).map_err(failed)?;
        let ids = tok.encode(&text, false).map_err(failed)?;
        if ids.is_empty() {
            continue;
        }
        // Keep the cached prefix the new rendering shares; feed only the rest.
        let common = generator
            .tokens()
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count();
        let common = common.min(ids.len() - 1);
        generator
            .rollback(generator.tokens().len() - common)
            .map_err(failed)?;
        let mut stream_text = TextStream::new(tok, args.sampling.stop.clone());
        let mut stream = generator.stream(&ids[common..], &cfg);
        while let Some(t) = stream.next() {
            let t = t.map_err(failed)?;
            if cfg.eos_token_ids.contains(&t) {
                continue;
            }
            let delta = stream_text.push(t).map_err(failed)?;
            if !emit(&mut out, &delta)? {
                return Ok(());
            }
            if stream_text.stopped() {
                stream.stop(StopReason::StopString);
            }
        }
        let tail = stream_text.finish();
        emit(&mut out, &format!("{tail}\n"))?;
        messages.push(Message::new("assistant", stream_text.text().to_string()));
    }
    Ok(())
}

/// Run `caramba bench perplexity`.
pub fn bench(cmd: &BenchCommand) -> Result<(), CliError> {
    let BenchCommand::Perplexity(args) = cmd;
    let loaded = args.model.load()?;
    let tokens = read_tokens(&args.data, &loaded)?;
    let cache_args = super::cache_policy::resolve(&args.cache, &loaded)?;
    let cache_args = &cache_args;
    let result = super::perplexity::perplexity_through_cache(
        &loaded.model,
        &tokens,
        args.block_size.min(loaded.max_seq_len),
        args.max_blocks,
        &loaded.device,
        cache_args.kinds(),
    )
    .map_err(failed)?;
    let quality = match (args.kl_baseline, cache_args.kinds()) {
        (Some(base), Some(_)) => Some(
            super::cache_quality::compare_caches(
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
                &|| cache_args.cache_or_plain(&loaded.model),
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
        v["cache"] = serde_json::json!(
            args.cache
                .kinds()
                .map(|k| {
                    let rot = match (k.rotate_k, k.rotate_v) {
                        (true, true) => " rotate_k rotate_v",
                        (true, false) => " rotate_k",
                        (false, true) => " rotate_v",
                        (false, false) => "",
                    };
                    let center = if k.center_k { " center_k" } else { "" };
                    format!("k={} v={}{rot}{center}", k.k, k.v)
                })
                .unwrap_or_else(|| "none (full forward)".into())
        );
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

fn read_tokens(path: &std::path::Path, loaded: &LoadedModel) -> Result<Vec<u32>, CliError> {
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

/// Run `caramba fetch`.
pub fn fetch_command(args: &FetchArgs) -> Result<(), CliError> {
    let source = fetch(&args.name).map_err(CliError::failed)?;
    let path = match source {
        crate::loader::ModelSource::HfDir(p) | crate::loader::ModelSource::Gguf(p) => p,
        other => return Err(failed(format!("unexpected source {other:?}"))),
    };
    let mut out = std::io::stdout().lock();
    emit(&mut out, &format!("{}\n", path.display()))?;
    Ok(())
}
