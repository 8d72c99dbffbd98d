//! Runs with `mode: sample` (alias `generate`) or `mode: chat`: load a trained model and continue
//! a prompt, or talk with it one stdin line at a time (the original's `--mode sample|chat`).
//!
//! The model is the run's `ckpt:` when it names one, else the run's own directory when a training
//! run of the same id left a model there (`caramba --mode train`, then `--mode sample`), else the
//! directory of the nearest training run above it in the target. The text of a sample is also
//! written to `<run dir>/sample.json`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::RunError;
use super::run_dir::RunDir;
use crate::cache::CacheKind;
use crate::compiler::{Compiled, RunPlan, TargetPlan};
use crate::infer::cache_policy::Gates;
use crate::infer::{
    AutoCache, CacheConfig, ChatTemplate, GenerateConfig, Generator, Message, SamplingParams,
};
use crate::loader::{LoadOptions, LoadedModel};
use crate::manifest::{RunGenerate, RunMode};
use crate::model::QuantKinds;

/// The model source a sampling or chat run loads (see the module docs).
pub fn model_source(
    runs_dir: &Path,
    compiled: &Compiled,
    target: &TargetPlan,
    run: &RunPlan,
) -> Result<String, RunError> {
    if let Some(ckpt) = &run.ckpt {
        return Ok(ckpt.clone());
    }
    let dir = |id: &str| RunDir::for_run(runs_dir, &compiled.plan.name, &target.name, id).root;
    let has_model = |d: &PathBuf| d.join("model.safetensors").exists();
    let own = dir(&run.id);
    if has_model(&own) {
        return Ok(own.display().to_string());
    }
    let index = target.runs.iter().position(|r| r.id == run.id).unwrap_or(0);
    let trained = target.runs[..index]
        .iter()
        .rev()
        .find(|r| r.mode.is_train())
        .map(|r| dir(&r.id));
    match trained {
        Some(d) => Ok(d.display().to_string()),
        None => Err(RunError::usage(miette::miette!(
            help = "train it first (`mode: train`, the default, with the same run id), or name a model with `ckpt:`",
            "run `{}` ({}): no trained model at {}",
            run.id,
            run.mode,
            own.display()
        ))),
    }
}

/// What `sample.json` holds.
#[derive(Serialize)]
struct SampleRecord<'a> {
    run_id: &'a str,
    model: &'a str,
    prompt: &'a str,
    text: &'a str,
    tokens: usize,
}

/// Sample from, or chat with, the model of `run`.
pub fn sample_or_chat(
    compiled: &Compiled,
    target: &TargetPlan,
    run: &RunPlan,
    runs_dir: &Path,
    device: Option<&str>,
) -> Result<(), RunError> {
    let source = model_source(runs_dir, compiled, target, run)?;
    let device_name = device.unwrap_or(&run.train.device);
    let device = crate::train::parse_device(device_name).map_err(RunError::usage)?;
    let opts = LoadOptions {
        device,
        ..LoadOptions::default()
    };
    let loaded = crate::loader::load(&source, &opts).map_err(RunError::usage)?;
    let g = run.generate.clone().unwrap_or_default();
    let tok = Tok::of(&loaded, target)?;
    let mut cfg = GenerateConfig {
        max_new_tokens: g.max_new_tokens,
        sampling: SamplingParams {
            temperature: g.temperature,
            top_k: g.top_k,
            top_p: g.top_p,
            repetition_penalty: g.repetition_penalty,
            seed: run.seed,
        },
        eos_token_ids: tok.eos(),
    };
    cfg.eos_token_ids.extend(g.eos_token_id);
    let cache = cache_config(&g, &loaded)?;
    let max_seq = g
        .max_seq_len
        .map_or(loaded.max_seq_len, |n| n.min(loaded.max_seq_len));
    let mut generator = Generator::new(&loaded.model, max_seq, loaded.dtype, &loaded.device);
    if let Some(c) = cache.cache_for(&loaded.model) {
        generator = generator.with_cache(c);
    }
    let failed = |e: &dyn std::fmt::Display| RunError::failed(miette::miette!("run `{}`: {e}", run.id));
    match run.mode {
        RunMode::Train => Ok(()),
        RunMode::Sample => {
            let ids = tok.encode(&g.prompt).map_err(|e| failed(&e))?;
            if ids.is_empty() {
                return Err(RunError::usage(miette::miette!(
                    "run `{}`: the prompt encodes to no tokens; give `generate.prompt`",
                    run.id
                )));
            }
            let out = generator.generate(&ids, &cfg).map_err(|e| failed(&e))?;
            let out: Vec<u32> = out
                .into_iter()
                .filter(|t| !cfg.eos_token_ids.contains(t))
                .collect();
            let text = tok.decode(&out).map_err(|e| failed(&e))?;
            println!("{}{}", g.prompt, text);
            let dir = RunDir::for_run(runs_dir, &compiled.plan.name, &target.name, &run.id);
            std::fs::create_dir_all(&dir.root).map_err(|e| failed(&e))?;
            crate::record::write_json(
                &dir.root.join("sample.json"),
                &SampleRecord {
                    run_id: &run.id,
                    model: &source,
                    prompt: &g.prompt,
                    text: &text,
                    tokens: out.len(),
                },
            )
            .map_err(|e| failed(&e))?;
            Ok(())
        }
        RunMode::Chat => chat(&mut generator, &tok, &cfg).map_err(|e| failed(&e)),
    }
}

/// One stdin line per user message; through the model's chat template when it has one, else as
/// plain text continued by the model (a model trained from scratch has no template).
fn chat(generator: &mut Generator<'_>, tok: &Tok<'_>, cfg: &GenerateConfig) -> Result<(), String> {
    let template = match tok {
        Tok::Text(t) => match t.chat_template.as_deref() {
            Some(src) => {
                let name = |id: Option<u32>| id.and_then(|i| t.token(i)).unwrap_or_default();
                Some(
                    ChatTemplate::new(
                        src,
                        &name(t.bos_token_id),
                        &name(t.eos_token_ids.first().copied()),
                    )
                    .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        },
        Tok::Data(_) => None,
    };
    let interactive = std::io::stdin().is_terminal();
    let mut messages: Vec<Message> = Vec::new();
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages.clear();
                generator.reset();
                continue;
            }
            _ => {}
        }
        let ids = match &template {
            Some(template) => {
                messages.push(Message::new("user", line));
                let text = template.render(&messages, true).map_err(|e| e.to_string())?;
                // why: the whole conversation is rendered again; feed only what the session lacks.
                generator.reset();
                tok.encode(&text)?
            }
            None => tok.encode(&format!("{line}\n"))?,
        };
        if ids.is_empty() {
            continue;
        }
        let answer = generator.generate(&ids, cfg).map_err(|e| e.to_string())?;
        let answer: Vec<u32> = answer
            .into_iter()
            .filter(|t| !cfg.eos_token_ids.contains(t))
            .collect();
        let text = tok.decode(&answer)?;
        if template.is_some() {
            messages.push(Message::new("assistant", text.clone()));
        }
        if writeln!(out, "{}", text.trim_end()).is_err() {
            return Ok(());
        }
        if interactive {
            eprint!("> ");
        }
    }
    Ok(())
}

/// The model's own tokenizer, else the target data's (`bytes` or a tokenizer.json).
enum Tok<'a> {
    Text(&'a crate::loader::TextTokenizer),
    Data(crate::data::Tokenizer),
}

impl<'a> Tok<'a> {
    fn of(loaded: &'a LoadedModel, target: &TargetPlan) -> Result<Self, RunError> {
        if let Some(t) = &loaded.tokenizer {
            return Ok(Self::Text(t));
        }
        let name = target
            .data
            .tokens()
            .and_then(|d| d.tokenizer.clone())
            .unwrap_or_else(|| "bytes".into());
        crate::data::Tokenizer::from_name(&name)
            .map(Self::Data)
            .map_err(RunError::usage)
    }

    fn eos(&self) -> Vec<u32> {
        match self {
            Self::Text(t) => t.eos_token_ids.clone(),
            Self::Data(t) => t.eos_id().into_iter().collect(),
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        match self {
            Self::Text(t) => t.encode(text, false).map_err(|e| e.to_string()),
            Self::Data(t) => t.encode(text).map_err(|e| e.to_string()),
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        match self {
            Self::Text(t) => t.decode(ids, true).map_err(|e| e.to_string()),
            Self::Data(t) => t.decode(ids).map_err(|e| e.to_string()),
        }
    }
}

/// The KV cache `generate.cache_kind` names (`auto` measured against the loaded model).
fn cache_config(g: &RunGenerate, loaded: &LoadedModel) -> Result<CacheConfig, RunError> {
    let cfg = match g.cache_kind.as_deref() {
        None | Some("fp32") => CacheConfig::default(),
        Some("auto") => CacheConfig {
            auto: Some(AutoCache {
                budget_bytes: g.cache_budget_mb.map(|mb| (mb * 1e6) as u64),
                gates: Gates::default(),
                speed_probe: false,
                explain: false,
            }),
            ..CacheConfig::default()
        },
        Some(name) => {
            let kind: CacheKind = name
                .parse()
                .map_err(|e: crate::cache::CacheError| RunError::usage(miette::miette!("{e}")))?;
            CacheConfig {
                kinds: Some(QuantKinds {
                    k: kind,
                    v: kind,
                    k_geo: None,
                    rotate_k: false,
                    center_k: true,
                    rotate_v: false,
                }),
                ..CacheConfig::default()
            }
        }
    };
    crate::infer::cache_policy::resolve(&cfg, loaded).map_err(|e| {
        if e.is_usage() {
            RunError::usage(e)
        } else {
            RunError::failed(e)
        }
    })
}
