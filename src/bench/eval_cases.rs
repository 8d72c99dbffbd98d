//! Behavioural eval cases and their scorer: does a model answer small questions right?
//! (reference: the original's `eval` verify block, caramba.md §9.) One definition serves an
//! upcycle's `verify` (`type: eval`) and `caramba bench behavior` (a YAML suite file).
//!
//! Three kinds (`kind:`), each with an `id` and a `prompt`:
//! - `int_greedy`: greedy continuation; the first integer in it (`-?[0-9]+`) must equal `answer`.
//! - `choice_logprob`: each of `choices` is scored by the summed log-probability of its tokens
//!   after the prompt (one forward pass over prompt + choice); the best must be `answer` (index).
//!   Unlike the original, which encoded choices without their leading space (so " Paris" was
//!   scored as "Paris", a rare word-start token), a choice that follows a prompt not ending in
//!   whitespace gets the space a continuation would have, and its tokens are those of
//!   `prompt + choice` after the prompt's own tokens (merges across the boundary included).
//! - `exact_match_greedy`: the first line of the greedy continuation, trimmed, must equal
//!   `answer`, trimmed (`match: exact`, the default), or the continuation must contain it
//!   (`match: contains`).
//!
//! The greedy kinds take an optional `max_new_tokens` of their own (else [`EvalOptions`]').
//!
//! Greedy decoding uses the KV cache (the same tokens as re-running the whole context each step,
//! which the original did). With `chat: true` a prompt is rendered as one user turn of the
//! tokenizer's chat template, generation prompt included.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::infer::chat_template::{ChatTemplate, Message};
use crate::infer::{GenerateConfig, Generator, SamplingParams};
use crate::loader::TextTokenizer;
use crate::model::LanguageModel;

/// `int_greedy`: the first integer of the greedy continuation must be `answer`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntGreedy {
    pub id: String,
    pub prompt: String,
    pub answer: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
}

/// `choice_logprob`: the most likely of `choices` after the prompt must be `choices[answer]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceLogprob {
    pub id: String,
    pub prompt: String,
    /// At least two.
    pub choices: Vec<String>,
    /// Index into `choices`.
    pub answer: usize,
}

/// `exact_match_greedy`: the first line of the greedy continuation must be `answer` (trimmed).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExactMatchGreedy {
    pub id: String,
    pub prompt: String,
    pub answer: String,
    /// Default: exact.
    #[serde(default, rename = "match")]
    pub mode: MatchMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
}

/// How `exact_match_greedy` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// The first line of the continuation, trimmed, equals the trimmed answer.
    #[default]
    Exact,
    /// The continuation contains the trimmed answer.
    Contains,
}

/// One behavioural test case (`kind:` selects the variant).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvalCase {
    IntGreedy(IntGreedy),
    ChoiceLogprob(ChoiceLogprob),
    ExactMatchGreedy(ExactMatchGreedy),
}

/// Where a case is wrong (`path` relative to the case: `answer`, `choices`, or empty) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseError {
    pub path: String,
    pub message: String,
}

impl EvalCase {
    pub const KINDS: [&'static str; 3] = ["int_greedy", "choice_logprob", "exact_match_greedy"];

    /// Parse one case, locating a problem at the field it concerns (serde's tagged enums lose
    /// the field path, so the payload is parsed on its own).
    pub fn parse(value: &serde_json::Value) -> Result<Self, CaseError> {
        let err = |path: &str, message: String| CaseError {
            path: path.into(),
            message,
        };
        let Some(obj) = value.as_object() else {
            return Err(err(
                "",
                "a case is a mapping {kind, id, prompt, answer, …}".into(),
            ));
        };
        let Some(kind) = obj.get("kind").and_then(|k| k.as_str()) else {
            return Err(err(
                "kind",
                format!("missing or non-string `kind` (one of {})", Self::KINDS.join(", ")),
            ));
        };
        let mut payload = obj.clone();
        payload.remove("kind");
        let payload = serde_json::Value::Object(payload);
        fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, CaseError> {
            serde_path_to_error::deserialize(v).map_err(|e| CaseError {
                path: match e.path().to_string().as_str() {
                    "." => String::new(),
                    p => p.to_string(),
                },
                message: e.into_inner().to_string(),
            })
        }
        let case = match kind {
            "int_greedy" => Self::IntGreedy(typed(payload)?),
            "choice_logprob" => Self::ChoiceLogprob(typed(payload)?),
            "exact_match_greedy" => Self::ExactMatchGreedy(typed(payload)?),
            other => {
                return Err(err(
                    "kind",
                    format!("unknown case kind `{other}` (one of {})", Self::KINDS.join(", ")),
                ));
            }
        };
        case.check().map_err(|(path, message)| err(path, message))?;
        Ok(case)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.prompt().is_empty() {
            return Err(("prompt", "the prompt is empty".into()));
        }
        if let Self::ChoiceLogprob(c) = self {
            if c.choices.len() < 2 {
                return Err(("choices", "give at least two choices".into()));
            }
            if c.choices.iter().any(|s| s.trim().is_empty()) {
                return Err(("choices", "a choice is empty".into()));
            }
            if c.answer >= c.choices.len() {
                return Err((
                    "answer",
                    format!(
                        "answer {} is not an index of the {} choices (0-based)",
                        c.answer,
                        c.choices.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn id(&self) -> &str {
        match self {
            Self::IntGreedy(c) => &c.id,
            Self::ChoiceLogprob(c) => &c.id,
            Self::ExactMatchGreedy(c) => &c.id,
        }
    }

    pub fn prompt(&self) -> &str {
        match self {
            Self::IntGreedy(c) => &c.prompt,
            Self::ChoiceLogprob(c) => &c.prompt,
            Self::ExactMatchGreedy(c) => &c.prompt,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::IntGreedy(_) => "int_greedy",
            Self::ChoiceLogprob(_) => "choice_logprob",
            Self::ExactMatchGreedy(_) => "exact_match_greedy",
        }
    }

    /// The right answer, as text.
    pub fn expected(&self) -> String {
        match self {
            Self::IntGreedy(c) => c.answer.to_string(),
            Self::ChoiceLogprob(c) => c.choices.get(c.answer).cloned().unwrap_or_default(),
            Self::ExactMatchGreedy(c) => c.answer.clone(),
        }
    }
}

/// How cases are run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalOptions {
    /// Greedy tokens generated for `int_greedy` and `exact_match_greedy`. Default: 16.
    pub max_new_tokens: usize,
    /// Render each prompt as a user turn of the tokenizer's chat template. Default: false.
    pub chat: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 16,
            chat: false,
        }
    }
}

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub id: String,
    pub kind: &'static str,
    pub correct: bool,
    /// What the model produced: the continuation, or the chosen choice.
    pub output: String,
    /// The right answer, as text.
    pub expected: String,
    /// `choice_logprob`: each choice's summed log-probability.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f64>,
}

/// The outcome of a suite on one model.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub correct: usize,
    pub total: usize,
    /// `correct / total` (0 for an empty suite).
    pub accuracy: f64,
    pub cases: Vec<CaseResult>,
}

/// Why scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("case `{id}`: {reason}")]
    Case { id: String, reason: String },
    #[error("`chat: true` needs a chat template, and this tokenizer has none")]
    NoChatTemplate,
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Tokenize(#[from] crate::loader::TokenizeError),
}

/// Score `cases` on `model` (which speaks `tokenizer`), computing on `device`.
pub fn score_cases(
    model: &LanguageModel,
    tokenizer: &TextTokenizer,
    cases: &[EvalCase],
    opts: &EvalOptions,
    device: &Device,
) -> Result<EvalReport, EvalError> {
    score_cases_with(model, tokenizer, cases, opts, device, |_| {})
}

/// [`score_cases`], calling `on_case` after each case (progress bars).
pub fn score_cases_with(
    model: &LanguageModel,
    tokenizer: &TextTokenizer,
    cases: &[EvalCase],
    opts: &EvalOptions,
    device: &Device,
    mut on_case: impl FnMut(&CaseResult),
) -> Result<EvalReport, EvalError> {
    let template = if opts.chat {
        let source = tokenizer
            .chat_template
            .as_deref()
            .ok_or(EvalError::NoChatTemplate)?;
        let name = |id: Option<u32>| id.and_then(|i| tokenizer.token(i)).unwrap_or_default();
        Some(
            ChatTemplate::new(
                source,
                &name(tokenizer.bos_token_id),
                &name(tokenizer.eos_token_ids.first().copied()),
            )
            .map_err(|e| EvalError::Case {
                id: String::new(),
                reason: format!("chat template: {}", e.0),
            })?,
        )
    } else {
        None
    };
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let fail = |reason: String| EvalError::Case {
            id: case.id().into(),
            reason,
        };
        let prompt = match &template {
            Some(t) => t
                .render(&[Message::new("user", case.prompt())], true)
                .map_err(|e| fail(format!("chat template: {}", e.0)))?,
            None => case.prompt().to_string(),
        };
        // why: the template already holds the special tokens; plain prompts get the tokenizer's.
        let add_special = template.is_none();
        let encode = |text: &str, special: bool| tokenizer.encode(text, special).map_err(|e| fail(e.0));
        let prompt_ids = encode(&prompt, add_special)?;
        let result = match case {
            EvalCase::IntGreedy(c) => {
                let max_new = c.max_new_tokens.unwrap_or(opts.max_new_tokens);
                let text = greedy(model, tokenizer, &prompt_ids, max_new, device)
                    .map_err(|e| fail(e.to_string()))?;
                let got = first_integer(&text);
                CaseResult {
                    id: c.id.clone(),
                    kind: case.kind(),
                    expected: case.expected(),
                    correct: got == Some(c.answer),
                    output: text,
                    scores: Vec::new(),
                }
            }
            EvalCase::ExactMatchGreedy(c) => {
                let max_new = c.max_new_tokens.unwrap_or(opts.max_new_tokens);
                let text = greedy(model, tokenizer, &prompt_ids, max_new, device)
                    .map_err(|e| fail(e.to_string()))?;
                let first_line = text.trim_start().lines().next().unwrap_or("").trim();
                let correct = match c.mode {
                    MatchMode::Exact => first_line == c.answer.trim(),
                    MatchMode::Contains => text.contains(c.answer.trim()),
                };
                CaseResult {
                    id: c.id.clone(),
                    kind: case.kind(),
                    expected: case.expected(),
                    correct,
                    output: text,
                    scores: Vec::new(),
                }
            }
            EvalCase::ChoiceLogprob(c) => {
                let mut scores = Vec::with_capacity(c.choices.len());
                for choice in &c.choices {
                    let joined = format!("{prompt}{}", with_delimiter(&prompt, choice));
                    let full = encode(&joined, add_special)?;
                    let choice_ids = if full.starts_with(&prompt_ids) && full.len() > prompt_ids.len() {
                        full[prompt_ids.len()..].to_vec()
                    } else {
                        // The boundary merged into the prompt's last token: score the choice
                        // encoded on its own after the prompt's tokens.
                        encode(&with_delimiter(&prompt, choice), false)?
                    };
                    scores.push(super::accuracy::choice_logprob(
                        model,
                        device,
                        &prompt_ids,
                        &choice_ids,
                    )?);
                }
                let best = argmax(&scores);
                CaseResult {
                    id: c.id.clone(),
                    kind: case.kind(),
                    expected: case.expected(),
                    correct: best == Some(c.answer),
                    output: best.map(|i| c.choices[i].clone()).unwrap_or_default(),
                    scores,
                }
            }
        };
        on_case(&result);
        results.push(result);
    }
    let correct = results.iter().filter(|r| r.correct).count();
    Ok(EvalReport {
        correct,
        total: results.len(),
        accuracy: if results.is_empty() {
            0.0
        } else {
            correct as f64 / results.len() as f64
        },
        cases: results,
    })
}

/// `choice` as it continues `prompt`: with a leading space unless one side already has whitespace.
fn with_delimiter(prompt: &str, choice: &str) -> String {
    let prompt_ends_blank = prompt.chars().last().is_none_or(char::is_whitespace);
    if prompt_ends_blank || choice.starts_with(char::is_whitespace) {
        choice.to_string()
    } else {
        format!(" {choice}")
    }
}

fn argmax(xs: &[f64]) -> Option<usize> {
    xs.iter()
        .enumerate()
        .filter(|(_, x)| x.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// The first `-?[0-9]+` of `text`, if it fits an i64.
pub fn first_integer(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(u8::is_ascii_digit)?;
    let end = bytes[start..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(bytes.len(), |n| start + n);
    let negative = start > 0 && bytes[start - 1] == b'-';
    let digits: i64 = text[start..end].parse().ok()?;
    Some(if negative { -digits } else { digits })
}

/// The greedy continuation of `prompt` (decoded, special tokens skipped).
fn greedy(
    model: &LanguageModel,
    tokenizer: &TextTokenizer,
    prompt: &[u32],
    max_new_tokens: usize,
    device: &Device,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut generator = Generator::new(model, prompt.len() + max_new_tokens + 1, DType::F32, device);
    let cfg = GenerateConfig {
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        eos_token_ids: tokenizer.eos_token_ids.clone(),
    };
    let ids = generator.generate(prompt, &cfg)?;
    Ok(tokenizer.decode(&ids, true).map_err(|e| e.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_are_found_with_their_sign() {
        assert_eq!(first_integer(" 12 apples"), Some(12));
        assert_eq!(first_integer("It is -7."), Some(-7));
        assert_eq!(first_integer("x-y 3"), Some(3));
        assert_eq!(first_integer("none"), None);
        assert_eq!(first_integer("a 2024-11"), Some(2024));
    }

    #[test]
    fn choices_get_the_space_a_continuation_has() {
        assert_eq!(with_delimiter("The capital of France is", "Paris"), " Paris");
        assert_eq!(with_delimiter("Answer:\n", "Paris"), "Paris");
        assert_eq!(with_delimiter("Q", " Paris"), " Paris");
    }

    #[test]
    fn cases_parse_from_yaml_and_errors_name_the_field() {
        let yaml = r#"
- {kind: int_greedy, id: add, prompt: "2 + 3 =", answer: 5}
- {kind: choice_logprob, id: cap, prompt: "The capital of France is", choices: [Paris, Rome], answer: 0}
- {kind: exact_match_greedy, id: kw, prompt: "def", answer: "f():"}
"#;
        let values: Vec<serde_json::Value> = serde_saphyr::from_str(yaml).expect("yaml");
        let cases: Vec<EvalCase> = values.iter().map(|v| EvalCase::parse(v).expect("case")).collect();
        assert_eq!(cases[0].kind(), "int_greedy");
        assert!(matches!(&cases[1], EvalCase::ChoiceLogprob(c) if c.choices.len() == 2));
        // The tagged enum derive reads the same text.
        let direct: Vec<EvalCase> = serde_saphyr::from_str(yaml).expect("derive");
        assert_eq!(direct, cases);

        let e = EvalCase::parse(&json!({"kind": "int_greedy", "id": "a", "prompt": "p", "answer": "five"}))
            .unwrap_err();
        assert_eq!(e.path, "answer", "{e:?}");
        let e = EvalCase::parse(
            &json!({"kind": "choice_logprob", "id": "a", "prompt": "p", "choices": ["x", "y"], "answer": 2}),
        )
        .unwrap_err();
        assert_eq!(e.path, "answer");
        assert!(e.message.contains("not an index"), "{}", e.message);
        let e = EvalCase::parse(&json!({"kind": "greedy", "id": "a"})).unwrap_err();
        assert_eq!(e.path, "kind");
        let e = EvalCase::parse(
            &json!({"kind": "int_greedy", "id": "a", "prompt": "p", "answer": 1, "extra": 0}),
        )
        .unwrap_err();
        assert!(e.message.contains("extra"), "{}", e.message);
    }
}
