//! Multiple-choice accuracy: each question of a JSONL task is scored by the summed
//! log-probability of each choice's tokens given the prompt (one full forward over
//! prompt + choice); the most likely choice is the model's answer.
//!
//! Task lines: `{"prompt": "…", "choices": ["…", "…"], "answer": 1}` (`answer` indexes
//! `choices`; an optional `"id"` is kept for nothing but readability). The choice tokens are the
//! tail of `encode(prompt + choice)` after `encode(prompt)` when that is a prefix — so a choice
//! that starts with a space is tokenized as it would be in running text — else `encode(choice)`.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use serde::Deserialize;

use super::eval_cases::EvalError;
use super::{AccuracyResult, BenchError, BenchModel};
use crate::console::Progress;
use crate::loader::TextTokenizer;
use crate::model::{ForwardCtx, LanguageModel};

/// One multiple-choice question.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McQuestion {
    #[serde(default)]
    pub id: Option<String>,
    pub prompt: String,
    pub choices: Vec<String>,
    /// Index of the right choice.
    pub answer: usize,
}

/// The questions of a JSONL task file (blank lines skipped), each checked.
pub fn read_task(path: &Path) -> Result<Vec<McQuestion>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, message: String| BenchError::BadInput {
        path: path.to_path_buf(),
        line: Some(line),
        message,
        help: r#"one JSON object per line: {"prompt": "…", "choices": ["…", "…"], "answer": 0}"#.into(),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q: McQuestion = serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        if q.choices.len() < 2 {
            return Err(bad(
                i + 1,
                format!("{} choice(s); a question needs at least 2", q.choices.len()),
            ));
        }
        if q.answer >= q.choices.len() {
            return Err(bad(
                i + 1,
                format!(
                    "answer {} is out of range for {} choices",
                    q.answer,
                    q.choices.len()
                ),
            ));
        }
        out.push(q);
    }
    if out.is_empty() {
        return Err(bad(1, "the task has no questions".into()));
    }
    Ok(out)
}

/// The task's name in results: the file stem.
pub fn task_name(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Context and continuation ids of `choice` after `prompt` (see the module docs).
pub fn continuation_ids(
    tok: &TextTokenizer,
    prompt: &str,
    choice: &str,
) -> Result<(Vec<u32>, Vec<u32>), crate::loader::TokenizeError> {
    let ctx = tok.encode(prompt, true)?;
    let whole = tok.encode(&format!("{prompt}{choice}"), true)?;
    let cont = if whole.len() > ctx.len() && whole.starts_with(&ctx) {
        whole[ctx.len()..].to_vec()
    } else {
        tok.encode(choice, false)?
    };
    Ok((ctx, cont))
}

/// Σ log p(cont[i] | ctx, cont[..i]) under `model`, from one forward over `ctx ++ cont`.
pub fn choice_logprob(
    model: &LanguageModel,
    device: &Device,
    ctx: &[u32],
    cont: &[u32],
) -> candle_core::Result<f64> {
    if ctx.is_empty() || cont.is_empty() {
        candle_core::bail!("both the prompt and the choice must have at least one token");
    }
    let ids: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    let t = ids.len();
    let input = Tensor::from_vec(ids, (1, t), device)?;
    let logits = model
        .forward(&input, &mut ForwardCtx::eval())?
        .to_dtype(DType::F32)?;
    // why: the logits at position p predict token p + 1, so the continuation is read from ctx.len() − 1 on.
    let logp = candle_nn::ops::log_softmax(&logits.narrow(1, ctx.len() - 1, cont.len())?, D::Minus1)?;
    let targets = Tensor::from_slice(cont, (1, cont.len(), 1), device)?;
    Ok(f64::from(
        logp.gather(&targets, 2)?.sum_all()?.to_scalar::<f32>()?,
    ))
}

/// Index of the most likely choice and every choice's summed log-probability.
pub fn answer(
    model: &LanguageModel,
    device: &Device,
    tok: &TextTokenizer,
    prompt: &str,
    choices: &[String],
) -> Result<(usize, Vec<f64>), EvalError> {
    let mut scores = Vec::with_capacity(choices.len());
    for choice in choices {
        let (ctx, cont) = continuation_ids(tok, prompt, choice)?;
        scores.push(choice_logprob(model, device, &ctx, &cont)?);
    }
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    Ok((best, scores))
}

/// Accuracy of `m` on the task at `path` (its first `limit` questions).
pub fn score_task(m: &BenchModel, path: &Path, limit: Option<usize>) -> Result<AccuracyResult, BenchError> {
    let tok = m.tokenizer("accuracy")?;
    let mut questions = read_task(path)?;
    questions.truncate(limit.unwrap_or(usize::MAX));
    let progress = Progress::new(questions.len() as u64, "accuracy");
    progress.set_message(&format!("{} {}", m.name, task_name(path)));
    let mut right = 0usize;
    for q in &questions {
        let (best, _) = answer(m.model, &m.device, tok, &q.prompt, &q.choices)
            .map_err(|e| BenchError::compute(&m.name, e))?;
        right += usize::from(best == q.answer);
        progress.inc(1);
    }
    Ok(AccuracyResult {
        model: m.name.clone(),
        task: task_name(path),
        metric: "accuracy".into(),
        value: right as f64 / questions.len() as f64,
        examples: questions.len() as u64,
        num_fewshot: 0,
    })
}
