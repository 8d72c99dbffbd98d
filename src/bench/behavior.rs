//! The `behavior` benchmark: a YAML suite of [eval cases](crate::bench::eval_cases) scored on a
//! model; the pass rate goes to the accuracy table (`task: behavior:<suite>`, `metric:
//! pass_rate`), every case's outcome to `behavior.jsonl`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::eval_cases::{CaseOutcome, EvalSuite};
use super::{AccuracyResult, BenchError, BenchModel};
use crate::console::Progress;

/// One case's outcome for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviorRecord {
    pub model: String,
    pub suite: String,
    #[serde(flatten)]
    pub outcome: CaseOutcome,
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
    let outcomes = suite
        .score(m.model, tok, &m.device, m.max_seq_len, |_| progress.inc(1))
        .map_err(|e| BenchError::compute(&m.name, e))?;
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let row = AccuracyResult {
        model: m.name.clone(),
        task: format!("behavior:{name}"),
        metric: "pass_rate".into(),
        value: passed as f64 / outcomes.len().max(1) as f64,
        examples: outcomes.len() as u64,
        num_fewshot: 0,
    };
    let records = outcomes
        .into_iter()
        .map(|outcome| BehaviorRecord {
            model: m.name.clone(),
            suite: name.clone(),
            outcome,
        })
        .collect();
    Ok((row, records))
}
