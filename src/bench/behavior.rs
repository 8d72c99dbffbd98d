//! The `behavior` benchmark: a YAML suite of [eval cases](crate::bench::eval_cases) scored on a
//! model; the pass rate goes to the accuracy table (`task: behavior:<suite>`, `metric:
//! pass_rate`), every case's outcome to `behavior.jsonl`.
//!
//! A suite file:
//! ```yaml
//! name: python_basics          # default: the file stem
//! max_new_tokens: 16           # for greedy cases without their own; default 16
//! cases:
//!   - {id: len, kind: int_greedy, prompt: "len([1, 2, 3]) returns", answer: 3}
//!   - {id: none, kind: exact_match_greedy, prompt: "…", answer: "None", match: contains}
//!   - {id: kw, kind: choice_logprob, prompt: "…", choices: [" def", " func"], answer: 0}
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::eval_cases::{EvalCase, EvalOptions, score_cases_with};
use super::{AccuracyResult, BenchError, BenchModel};
use crate::console::Progress;

/// A YAML suite of cases.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSuite {
    pub name: Option<String>,
    pub max_new_tokens: Option<usize>,
    pub cases: Vec<EvalCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    cases: Vec<serde_json::Value>,
}

impl EvalSuite {
    /// Parse a suite; a bad case is named with its index and field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: SuiteFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if file.cases.is_empty() {
            return Err("the suite has no cases".into());
        }
        let mut cases = Vec::with_capacity(file.cases.len());
        let mut seen = std::collections::HashSet::new();
        for (i, v) in file.cases.iter().enumerate() {
            let case = EvalCase::parse(v).map_err(|e| match e.path.as_str() {
                "" => format!("cases[{i}]: {}", e.message),
                p => format!("cases[{i}].{p}: {}", e.message),
            })?;
            if !seen.insert(case.id().to_string()) {
                return Err(format!("cases[{i}].id: `{}` is used twice", case.id()));
            }
            cases.push(case);
        }
        Ok(Self {
            name: file.name,
            max_new_tokens: file.max_new_tokens,
            cases,
        })
    }

    /// Read a suite file (its name defaults to the file stem).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let mut suite = Self::parse(&text)?;
        if suite.name.is_none() {
            suite.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(suite)
    }
}

/// One case's outcome for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviorRecord {
    pub model: String,
    pub suite: String,
    pub id: String,
    pub kind: String,
    pub passed: bool,
    /// The greedy output, or the chosen choice.
    pub output: String,
    /// The answer, as text.
    pub expected: String,
}

/// Read the suite at `path`.
pub fn read_suite(path: &Path) -> Result<EvalSuite, BenchError> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(BenchError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    EvalSuite::read(path).map_err(|message| BenchError::BadInput {
        path: path.to_path_buf(),
        line: None,
        message,
        help: "cases: [{id, kind: exact_match_greedy | choice_logprob | int_greedy, prompt, answer, …}]"
            .into(),
    })
}

/// Score `suite` on `m`: the pass-rate row and each case's record.
pub fn run_suite(
    m: &BenchModel,
    suite: &EvalSuite,
) -> Result<(AccuracyResult, Vec<BehaviorRecord>), BenchError> {
    let tok = m.tokenizer("behavior")?;
    let name = suite.name.clone().unwrap_or_else(|| "suite".into());
    let progress = Progress::new(suite.cases.len() as u64, "behavior");
    progress.set_message(&format!("{} {name}", m.name));
    let opts = EvalOptions {
        max_new_tokens: suite
            .max_new_tokens
            .unwrap_or(EvalOptions::default().max_new_tokens),
        chat: false,
    };
    let report = score_cases_with(m.model, tok, &suite.cases, &opts, &m.device, |_| progress.inc(1))
        .map_err(|e| BenchError::compute(&m.name, e))?;
    let row = AccuracyResult {
        model: m.name.clone(),
        task: format!("behavior:{name}"),
        metric: "pass_rate".into(),
        value: report.accuracy,
        examples: report.total as u64,
        num_fewshot: 0,
    };
    let records = report
        .cases
        .into_iter()
        .map(|c| BehaviorRecord {
            model: m.name.clone(),
            suite: name.clone(),
            id: c.id,
            kind: c.kind.to_string(),
            passed: c.correct,
            output: c.output,
            expected: c.expected,
        })
        .collect();
    Ok((row, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_reject_unknown_kinds_fields_and_duplicate_ids() {
        let err =
            EvalSuite::parse("cases:\n  - {id: a, kind: regex, prompt: x, answer: y}\n").expect_err("kind");
        assert!(err.contains("cases[0].kind"), "{err}");
        let err = EvalSuite::parse("cases:\n  - {id: a, kind: int_greedy, prompt: x, answer: 1, extra: 2}\n")
            .expect_err("field");
        assert!(err.contains("cases[0]"), "{err}");
        let err = EvalSuite::parse(
            "cases:\n  - {id: a, kind: int_greedy, prompt: x, answer: 1}\n  - {id: a, kind: int_greedy, prompt: z2, answer: 2}\n",
        )
        .expect_err("dup");
        assert!(err.contains("used twice"), "{err}");
        let ok = EvalSuite::parse(
            "cases:\n  - {id: a, kind: exact_match_greedy, prompt: x, answer: Paris, match: contains, max_new_tokens: 4}\n",
        )
        .expect("valid");
        assert!(matches!(&ok.cases[0], EvalCase::ExactMatchGreedy(c)
            if c.mode == crate::bench::eval_cases::MatchMode::Contains && c.max_new_tokens == Some(4)));
    }
}
