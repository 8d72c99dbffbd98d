//! Behavioural eval cases and their scorer, usable by any caller that holds a model and its
//! tokenizer (the `behavior` benchmark; an upcycle's verify later).
//!
//! A suite is YAML:
//! ```yaml
//! name: python_basics          # default: the file stem
//! max_new_tokens: 16           # default for the greedy cases: 16
//! cases:
//!   - {id: len, kind: int_greedy, prompt: "len([1, 2, 3]) returns", answer: 3}
//!   - {id: none, kind: exact_match_greedy, prompt: "…", answer: "None", match: contains}
//!   - {id: kw, kind: choice_logprob, prompt: "…", choices: [" def", " func"], answer: 0}
//! ```
//! - `exact_match_greedy`: greedy output (`max_new_tokens`), compared with `answer` after trimming
//!   both: equal (`match: exact`, the default) or containing it (`match: contains`);
//! - `choice_logprob`: the choice with the largest summed log-probability after the prompt must be
//!   `answer` (an index), scored as in [`crate::bench::accuracy`];
//! - `int_greedy`: the first integer (`-?[0-9]+`) of the greedy output must equal `answer`; an
//!   output without one fails (the original scored it as 0, which passed every `answer: 0`).

use std::path::Path;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::infer::{GenerateConfig, Generator, SamplingParams};
use crate::loader::TextTokenizer;
use crate::model::LanguageModel;

/// Greedy tokens per case when neither the case nor the suite says. Default: 16.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 16;

/// A failure while scoring (not a failed case).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Tokenize(#[from] crate::loader::TokenizeError),
    #[error(transparent)]
    Compute(#[from] candle_core::Error),
    #[error(transparent)]
    Generate(#[from] crate::infer::GenerateError),
    #[error("case `{id}`: {message}")]
    BadCase { id: String, message: String },
}

/// A YAML suite of cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSuite {
    /// Default: the file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Greedy tokens of cases without their own. Default: 16.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    pub cases: Vec<EvalCase>,
}

/// One case, tagged by `kind:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvalCase {
    ExactMatchGreedy(ExactMatchCase),
    ChoiceLogprob(ChoiceCase),
    IntGreedy(IntCase),
}

/// How `exact_match_greedy` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// Trimmed output equals the trimmed answer.
    #[default]
    Exact,
    /// Trimmed output contains the trimmed answer.
    Contains,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactMatchCase {
    pub id: String,
    pub prompt: String,
    pub answer: String,
    /// Default: exact.
    #[serde(default, rename = "match")]
    pub mode: MatchMode,
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceCase {
    pub id: String,
    pub prompt: String,
    pub choices: Vec<String>,
    /// Index of the right choice.
    pub answer: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntCase {
    pub id: String,
    pub prompt: String,
    pub answer: i64,
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
}

/// What one case produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseOutcome {
    pub id: String,
    pub kind: String,
    pub passed: bool,
    /// The greedy output, or the chosen choice.
    pub output: String,
    /// The answer, as text.
    pub expected: String,
}

impl EvalCase {
    pub fn id(&self) -> &str {
        match self {
            Self::ExactMatchGreedy(c) => &c.id,
            Self::ChoiceLogprob(c) => &c.id,
            Self::IntGreedy(c) => &c.id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::ExactMatchGreedy(_) => "exact_match_greedy",
            Self::ChoiceLogprob(_) => "choice_logprob",
            Self::IntGreedy(_) => "int_greedy",
        }
    }
}

impl EvalSuite {
    /// Read and check a suite file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let mut suite: EvalSuite = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
        if suite.name.is_none() {
            suite.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        suite.check()?;
        Ok(suite)
    }

    /// Problems serde cannot see: no cases, duplicate ids, answers out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.cases.is_empty() {
            return Err("the suite has no cases".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.cases {
            if !seen.insert(c.id()) {
                return Err(format!("case id `{}` is used twice", c.id()));
            }
            if let EvalCase::ChoiceLogprob(c) = c
                && (c.choices.len() < 2 || c.answer >= c.choices.len())
            {
                return Err(format!(
                    "case `{}`: needs at least 2 choices and an answer index below their count ({} choices, answer {})",
                    c.id,
                    c.choices.len(),
                    c.answer
                ));
            }
        }
        Ok(())
    }

    /// Score every case in order.
    pub fn score(
        &self,
        model: &LanguageModel,
        tok: &TextTokenizer,
        device: &Device,
        max_seq_len: usize,
        mut on_case: impl FnMut(&CaseOutcome),
    ) -> Result<Vec<CaseOutcome>, EvalError> {
        let default_max = self.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
        self.cases
            .iter()
            .map(|case| {
                let outcome = score_case(case, model, tok, device, max_seq_len, default_max)?;
                on_case(&outcome);
                Ok(outcome)
            })
            .collect()
    }
}

/// Score one case.
pub fn score_case(
    case: &EvalCase,
    model: &LanguageModel,
    tok: &TextTokenizer,
    device: &Device,
    max_seq_len: usize,
    default_max_new_tokens: usize,
) -> Result<CaseOutcome, EvalError> {
    let outcome = |passed: bool, output: String, expected: String| CaseOutcome {
        id: case.id().to_string(),
        kind: case.kind().to_string(),
        passed,
        output,
        expected,
    };
    Ok(match case {
        EvalCase::ExactMatchGreedy(c) => {
            let out = greedy_text(
                model,
                tok,
                device,
                max_seq_len,
                &c.prompt,
                c.max_new_tokens.unwrap_or(default_max_new_tokens),
            )?;
            let (got, want) = (out.trim(), c.answer.trim());
            let passed = match c.mode {
                MatchMode::Exact => got == want,
                MatchMode::Contains => got.contains(want),
            };
            outcome(passed, out.clone(), c.answer.clone())
        }
        EvalCase::ChoiceLogprob(c) => {
            let (best, _) = super::accuracy::answer(model, device, tok, &c.prompt, &c.choices)?;
            let chosen = c.choices.get(best).cloned().unwrap_or_default();
            let expected = c
                .choices
                .get(c.answer)
                .cloned()
                .ok_or_else(|| EvalError::BadCase {
                    id: c.id.clone(),
                    message: format!("answer {} is out of range", c.answer),
                })?;
            outcome(best == c.answer, chosen, expected)
        }
        EvalCase::IntGreedy(c) => {
            let out = greedy_text(
                model,
                tok,
                device,
                max_seq_len,
                &c.prompt,
                c.max_new_tokens.unwrap_or(default_max_new_tokens),
            )?;
            let passed = first_integer(&out) == Some(c.answer);
            outcome(passed, out, c.answer.to_string())
        }
    })
}

/// The first `-?[0-9]+` of `text` that fits an i64.
pub fn first_integer(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(u8::is_ascii_digit)?;
    let end = bytes[start..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(bytes.len(), |n| start + n);
    let negative = start > 0 && bytes[start - 1] == b'-';
    let value: i64 = text[start..end].parse().ok()?;
    Some(if negative { -value } else { value })
}

/// Greedy continuation of `prompt` (at most `max_new_tokens`, stopping at eos), decoded without
/// special tokens.
pub fn greedy_text(
    model: &LanguageModel,
    tok: &TextTokenizer,
    device: &Device,
    max_seq_len: usize,
    prompt: &str,
    max_new_tokens: usize,
) -> Result<String, EvalError> {
    let ids = tok.encode(prompt, true)?;
    let cfg = GenerateConfig {
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        eos_token_ids: tok.eos_token_ids.clone(),
    };
    let max_len = max_seq_len.min(ids.len() + max_new_tokens + 1);
    let out = Generator::new(model, max_len, DType::F32, device).generate(&ids, &cfg)?;
    Ok(tok.decode(&out, true)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_integer_takes_the_first_signed_run_of_digits() {
        assert_eq!(first_integer(" is 42, not 7"), Some(42));
        assert_eq!(first_integer("x = -3"), Some(-3));
        assert_eq!(first_integer("a-b 5"), Some(5));
        assert_eq!(first_integer("none"), None);
        assert_eq!(first_integer("99999999999999999999"), None);
    }

    #[test]
    fn suites_reject_unknown_kinds_and_fields() {
        let bad: Result<EvalSuite, _> =
            serde_saphyr::from_str("cases:\n  - {id: a, kind: regex, prompt: x, answer: y}\n");
        assert!(bad.is_err());
        let bad: Result<EvalSuite, _> =
            serde_saphyr::from_str("cases:\n  - {id: a, kind: int_greedy, prompt: x, answer: 1, extra: 2}\n");
        assert!(bad.is_err());
        let ok: EvalSuite = serde_saphyr::from_str(
            "cases:\n  - {id: a, kind: exact_match_greedy, prompt: x, answer: Paris, match: contains}\n",
        )
        .expect("valid");
        assert!(matches!(&ok.cases[0], EvalCase::ExactMatchGreedy(c) if c.mode == MatchMode::Contains));
    }
}
