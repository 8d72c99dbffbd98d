//! Greedy continuations of a prompts file, kept for reading (`generations.jsonl`).
//!
//! A prompts file is either JSONL (`.jsonl`: each line a JSON string or `{"prompt": "…"}`) or
//! plain text with one prompt per non-empty line.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{BenchError, BenchModel};
use crate::console::Progress;

/// One generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub model: String,
    pub prompt: String,
    /// The continuation, special tokens removed.
    pub output: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Wall time of the whole generation (prefill included).
    pub seconds: f64,
}

/// The prompts of `path`.
pub fn read_prompts(path: &Path) -> Result<Vec<String>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !jsonl {
            out.push(line.to_string());
            continue;
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Line {
            Text(String),
            Object { prompt: String },
        }
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Text(p) | Line::Object { prompt: p }) => out.push(p),
            Err(e) => {
                return Err(BenchError::BadInput {
                    path: path.to_path_buf(),
                    line: Some(i + 1),
                    message: e.to_string(),
                    help: r#"each line a JSON string or {"prompt": "…"}"#.into(),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(BenchError::BadInput {
            path: path.to_path_buf(),
            line: None,
            message: "no prompts".into(),
            help: "one prompt per line".into(),
        });
    }
    Ok(out)
}

/// Greedy continuations of every prompt by `m`.
pub fn generate_all(
    m: &BenchModel,
    prompts: &[String],
    max_new_tokens: usize,
) -> Result<Vec<GenerationRecord>, BenchError> {
    let tok = m.tokenizer("generation")?;
    let progress = Progress::new(prompts.len() as u64, "generation");
    progress.set_message(&m.name);
    let mut out = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let t0 = Instant::now();
        let ids = tok
            .encode(prompt, true)
            .map_err(|e| BenchError::compute(&m.name, e))?;
        m.check_context(ids.len() + max_new_tokens + 1, "a prompt and its continuation")?;
        let cfg = crate::infer::GenerateConfig {
            max_new_tokens,
            sampling: crate::infer::SamplingParams::greedy(),
            eos_token_ids: tok.eos_token_ids.clone(),
        };
        let mut g = super::latency::session(m, crate::cache::CacheKind::Fp32, ids.len() + max_new_tokens + 1);
        let generated = g
            .generate(&ids, &cfg)
            .map_err(|e| BenchError::compute(&m.name, e))?;
        let output = tok
            .decode(&generated, true)
            .map_err(|e| BenchError::compute(&m.name, e))?;
        out.push(GenerationRecord {
            model: m.name.clone(),
            prompt: prompt.clone(),
            output,
            prompt_tokens: ids.len(),
            generated_tokens: generated.len(),
            seconds: t0.elapsed().as_secs_f64(),
        });
        progress.inc(1);
    }
    Ok(out)
}

/// Write `records` as JSON lines to `path` (atomically).
pub fn write_jsonl(path: &Path, records: &[impl Serialize]) -> Result<(), BenchError> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).map_err(|e| BenchError::Write(e.to_string()))?);
        text.push('\n');
    }
    crate::record::write_atomic(path, text.as_bytes())
        .map_err(|e| BenchError::Write(format!("{}: {e}", path.display())))
}
