//! Running one process target: its directory `runs/<name>/<target>/` (locked while it runs),
//! `process.json` (the target as run), the endpoint, the session, the process itself, and
//! `summary.json` — written whether the process succeeded or failed, with the budget spent.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::budget::Budget;
use super::error::AgentError;
use super::session::Session;
use super::target::ProcessTarget;
use super::transcript::Transcript;
use super::{ProcessSpec, endpoint, multiplex_chat, paper_review, paper_write, research_loop};
use crate::record::{DirLock, write_json};

/// A finished process.
#[derive(Debug, Clone)]
pub struct ProcessOutcome {
    /// `runs/<name>/<target>/`.
    pub dir: PathBuf,
    /// What `summary.json` holds.
    pub summary: Value,
}

/// Run `target` of the manifest called `name` under `runs_dir`.
pub fn run_process(
    name: &str,
    target: &ProcessTarget,
    runs_dir: &Path,
) -> Result<ProcessOutcome, AgentError> {
    let dir = runs_dir.join(name).join(&target.name);
    std::fs::create_dir_all(&dir).map_err(|e| AgentError::output(&dir, e))?;
    // why: two processes writing one transcript would interleave it; the second exits naming the first.
    let _lock = DirLock::acquire(&dir).map_err(|e| AgentError::output(&dir, e))?;
    let spec_path = dir.join("process.json");
    write_json(&spec_path, target).map_err(|e| AgentError::output(&spec_path, e))?;
    let kind = target.process.kind();
    tracing::info!(process = kind, target = %target.name, dir = %dir.display(), "starting");
    let endpoint = match endpoint::open(&target.endpoint, &target.budget) {
        Ok(e) => e,
        Err(e) => {
            let summary =
                json!({"target": target.name, "process": kind, "status": "failed", "error": e.to_string()});
            let path = dir.join("summary.json");
            write_json(&path, &summary).map_err(|w| AgentError::output(&path, w))?;
            return Err(e);
        }
    };
    let transcript = Transcript::new(&dir.join("transcript.jsonl"));
    let mut session = Session::new(
        endpoint.client.clone(),
        Budget::new(target.budget.clone()),
        transcript,
        &target.endpoint,
    );
    session
        .transcript
        .note(format!("{kind} `{}` on {}", target.name, endpoint.describe))?;
    let result = match &target.process {
        ProcessSpec::PaperWrite(spec) => paper_write::run(spec, target, &mut session, &dir),
        ProcessSpec::PaperReview(spec) => paper_review::run(spec, target, &mut session, &dir),
        ProcessSpec::MultiplexChat(spec) => multiplex_chat::run(spec, target, &mut session, &dir),
        ProcessSpec::ResearchLoop(spec) => research_loop::run(spec, target, &mut session, &dir),
    };
    let (status, process, error) = match &result {
        Ok(v) => ("ok", v.clone(), None),
        Err(e) => ("failed", Value::Null, Some(e.to_string())),
    };
    let summary = json!({
        "target": target.name,
        "process": kind,
        "status": status,
        "endpoint": endpoint.describe,
        "model": endpoint.client.model(),
        "budget": session.report(),
        "transcript": "transcript.jsonl",
        "result": process,
        "error": error,
        "git_revision": crate::record::git_revision(),
    });
    let summary_path = dir.join("summary.json");
    write_json(&summary_path, &summary).map_err(|e| AgentError::output(&summary_path, e))?;
    result?;
    Ok(ProcessOutcome { dir, summary })
}
