//! `research_loop`: propose a manifest change, run it, read the result, repeat — `rounds`
//! times under the budget.
//!
//! The `researcher` persona sees the goal, the knobs it may turn (manifest paths such as
//! `targets[0].runs[0].train.lr`, with bounds) and their current values, and every round so far
//! with its metric; it answers with one JSON change `{"path", "value", "why"}`, read leniently
//! and checked against the knobs (one retry with the problem shown). The changed manifest is
//! written to `rounds/<k>/manifest.yml` and run by the `caramba` binary as a child process
//! (`caramba run … --runs-dir rounds/<k>/runs`, killed at `run_timeout_s` or the budget's wall
//! time), so a failing run cannot take the loop down. The metric is read from the runs'
//! `summary.json` (lower is better); a better round becomes the base of the next. `loop.json`
//! holds every round.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::Message;
use super::error::AgentError;
use super::facts::sig4;
use super::lenient_json::extract_object;
use super::session::Session;
use super::target::ProcessTarget;
use super::verdict::number;
use crate::layer::SpecProblem;
use crate::record::{write_atomic, write_json};

/// `process: {type: research_loop, …}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchLoopSpec {
    /// The manifest to improve.
    pub manifest: String,
    /// Its target to run. Default: its default target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Proposals. Default: 3.
    #[serde(default = "default_rounds")]
    pub rounds: usize,
    /// What the model may change.
    pub knobs: Vec<Knob>,
    /// Key of the runs' `summary.json` to lower. Default: val_loss.
    #[serde(default = "default_metric")]
    pub metric: String,
    /// Run the manifest unchanged first, as round 0. Default: true.
    #[serde(default = "default_true")]
    pub baseline: bool,
    /// Seconds one training run may take. Default: 600.
    #[serde(default = "default_run_timeout")]
    pub run_timeout_s: f64,
    /// What the researcher aims for, in words. Default: lower the metric.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub goal: String,
    /// Tokens of one proposal. Default: 128.
    #[serde(default = "default_proposal_tokens")]
    pub proposal_tokens: usize,
}

/// A number the researcher may set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Knob {
    /// Manifest path: `targets[0].runs[0].train.lr`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Whole numbers only (steps, widths). Default: false.
    #[serde(default)]
    pub integer: bool,
}

fn default_rounds() -> usize {
    3
}

fn default_metric() -> String {
    "val_loss".into()
}

fn default_true() -> bool {
    true
}

fn default_run_timeout() -> f64 {
    600.0
}

fn default_proposal_tokens() -> usize {
    128
}

impl ResearchLoopSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        if self.manifest.trim().is_empty() {
            out.push(SpecProblem::new("manifest", "the manifest path is empty"));
        }
        if self.rounds == 0 || self.rounds > 100 {
            out.push(SpecProblem::new("rounds", "must be 1 to 100"));
        }
        if self.knobs.is_empty() {
            out.push(
                SpecProblem::new("knobs", "no knobs: the researcher could change nothing")
                    .with_help("e.g. `knobs: [{path: targets[0].runs[0].train.lr, min: 1e-5, max: 1e-2}]`"),
            );
        }
        for (i, k) in self.knobs.iter().enumerate() {
            if parse_path(&k.path).is_none() {
                out.push(
                    SpecProblem::new(
                        format!("knobs[{i}].path"),
                        format!("`{}` is not a manifest path", k.path),
                    )
                    .with_help("keys joined by `.`, list items as `[i]`: `targets[0].runs[0].steps`"),
                );
            }
            if let (Some(lo), Some(hi)) = (k.min, k.max)
                && lo > hi
            {
                out.push(SpecProblem::new(
                    format!("knobs[{i}]"),
                    format!("min {lo} is above max {hi}"),
                ));
            }
        }
        if !(self.run_timeout_s.is_finite() && self.run_timeout_s > 0.0) {
            out.push(SpecProblem::new(
                "run_timeout_s",
                "must be a positive number of seconds",
            ));
        }
        if self.proposal_tokens == 0 {
            out.push(SpecProblem::new("proposal_tokens", "must be at least 1"));
        }
        out
    }
}

/// One step of a path: a key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// `targets[0].runs[1].train.lr` → steps; `None` when malformed.
pub fn parse_path(path: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && rest.is_empty() {
            return None;
        }
        if !key.is_empty() {
            out.push(Step::Key(key.to_string()));
        }
        let mut rest = rest;
        while !rest.is_empty() {
            let close = rest.find(']')?;
            if !rest.starts_with('[') {
                return None;
            }
            out.push(Step::Index(rest[1..close].parse().ok()?));
            rest = &rest[close + 1..];
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The value at `path`.
pub fn get_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = root;
    for step in parse_path(path)? {
        v = match step {
            Step::Key(k) => v.get(&k)?,
            Step::Index(i) => v.get(i)?,
        };
    }
    Some(v)
}

/// Set `path` to `value`: every step but the last must exist; the last key may be new (a
/// field the manifest left at its default).
pub fn set_path(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let steps = parse_path(path).ok_or_else(|| format!("`{path}` is not a manifest path"))?;
    let (last, parents) = steps.split_last().ok_or_else(|| format!("`{path}` is empty"))?;
    let mut v = root;
    for step in parents {
        v = match step {
            Step::Key(k) => {
                let obj = v
                    .as_object_mut()
                    .ok_or_else(|| format!("`{path}`: `{k}` is inside something that is not a mapping"))?;
                // why: a missing mapping on the way (`train:` left out) is created, as the manifest's default.
                obj.entry(k.clone())
                    .or_insert_with(|| Value::Object(Default::default()))
            }
            Step::Index(i) => v.get_mut(*i).ok_or_else(|| format!("`{path}`: no item [{i}]"))?,
        };
    }
    match last {
        Step::Key(k) => {
            let obj = v
                .as_object_mut()
                .ok_or_else(|| format!("`{path}`: the parent of `{k}` is not a mapping"))?;
            obj.insert(k.clone(), value);
        }
        Step::Index(i) => {
            let slot = v.get_mut(*i).ok_or_else(|| format!("`{path}`: no item [{i}]"))?;
            *slot = value;
        }
    }
    Ok(())
}

/// A proposed change, checked against the knobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub path: String,
    pub value: f64,
    pub why: String,
}

/// Read a proposal; `Err` says what is wrong in words the model can act on.
pub fn parse_proposal(text: &str, knobs: &[Knob]) -> Result<Change, String> {
    let v = extract_object(text)?.value;
    let path = v["path"]
        .as_str()
        .ok_or_else(|| "`path` is missing (one of the knobs' paths)".to_string())?
        .trim()
        .to_string();
    let knob = knobs.iter().find(|k| k.path == path).ok_or_else(|| {
        format!(
            "`{path}` is not a knob; choose one of: {}",
            knobs
                .iter()
                .map(|k| k.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let value = v.get("value").and_then(number).ok_or_else(|| {
        format!(
            "`value` must be a number, got {}",
            v.get("value").unwrap_or(&Value::Null)
        )
    })?;
    if !value.is_finite() {
        return Err(format!("`value` {value} is not finite"));
    }
    if knob.integer && value.fract() != 0.0 {
        return Err(format!("`{path}` takes whole numbers, got {value}"));
    }
    if knob.min.is_some_and(|lo| value < lo) || knob.max.is_some_and(|hi| value > hi) {
        return Err(format!("`value` {value} is outside {}", bounds(knob)));
    }
    Ok(Change {
        path,
        value,
        why: v["why"].as_str().unwrap_or_default().trim().to_string(),
    })
}

fn bounds(k: &Knob) -> String {
    match (k.min, k.max) {
        (Some(lo), Some(hi)) => format!("[{lo}, {hi}]"),
        (Some(lo), None) => format!("[{lo}, ∞)"),
        (None, Some(hi)) => format!("(−∞, {hi}]"),
        (None, None) => "any value".into(),
    }
}

/// One round of `loop.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: usize,
    pub change: Option<Change>,
    /// `ok`, `no_proposal`, `run_failed`, `timeout`, `no_metric`.
    pub status: String,
    pub metric: Option<f64>,
    pub improved: bool,
    pub detail: String,
    pub seconds: f64,
}

/// The proposal request.
pub fn proposal_prompt(spec: &ResearchLoopSpec, current: &Value, rounds: &[Round]) -> String {
    let goal = if spec.goal.is_empty() {
        format!("lower `{}`", spec.metric)
    } else {
        spec.goal.clone()
    };
    let mut p = format!(
        "Goal: {goal} (the runs' `{}`, lower is better).\n\nYou may change one of these settings:\n",
        spec.metric
    );
    for k in &spec.knobs {
        let now = get_path(current, &k.path).map_or("(default)".to_string(), |v| v.to_string());
        p.push_str(&format!(
            "- {} = {now}, allowed {}{}\n",
            k.path,
            bounds(k),
            if k.integer { ", whole numbers" } else { "" }
        ));
    }
    if rounds.is_empty() {
        p.push_str("\nNo runs yet.\n");
    } else {
        p.push_str("\nRuns so far:\n");
        for r in rounds {
            let change = r
                .change
                .as_ref()
                .map_or("unchanged".to_string(), |c| format!("{} = {}", c.path, c.value));
            let metric = r
                .metric
                .map_or(r.status.clone(), |m| format!("{} = {}", spec.metric, sig4(m)));
            p.push_str(&format!("- round {}: {change}: {metric}\n", r.round));
        }
    }
    p.push_str(
        "\nPropose the next change. Reply with only a JSON object: {\"path\": \"<one of the settings>\", \"value\": <a number>, \"why\": \"<one sentence>\"}",
    );
    p
}

/// The `caramba` binary: `CARAMBA_EXE`, else this executable.
fn caramba_exe() -> Result<PathBuf, AgentError> {
    if let Ok(p) = std::env::var("CARAMBA_EXE") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe()
        .map_err(|e| AgentError::input(Path::new("caramba"), format!("cannot find this executable: {e}")))
}

/// Run `manifest` in `dir`; (status, metric, detail).
fn run_manifest(
    spec: &ResearchLoopSpec,
    manifest: &Path,
    dir: &Path,
    timeout: Duration,
) -> Result<(String, Option<f64>, String), AgentError> {
    let runs = dir.join("runs");
    let stdout = std::fs::File::create(dir.join("stdout.txt")).map_err(|e| AgentError::output(dir, e))?;
    let stderr_path = dir.join("stderr.txt");
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| AgentError::output(dir, e))?;
    let mut cmd = Command::new(caramba_exe()?);
    cmd.arg("run").arg(manifest).arg("--runs-dir").arg(&runs);
    if let Some(t) = &spec.target {
        cmd.arg("--target").arg(t);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| AgentError::input(manifest, format!("cannot start `caramba run`: {e}")))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((
                    "timeout".into(),
                    None,
                    format!("killed after {:.0} s", timeout.as_secs_f64()),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => {
                return Err(AgentError::input(
                    manifest,
                    format!("waiting for `caramba run`: {e}"),
                ));
            }
        }
    };
    if !status.success() {
        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Ok((
            "run_failed".into(),
            None,
            format!("{status}: {}", tail.join(" / ")),
        ));
    }
    let metric = summaries(&runs)
        .iter()
        .filter_map(|v| v.get(&spec.metric).and_then(Value::as_f64))
        .fold(None, |best: Option<f64>, m| Some(best.map_or(m, |b| b.min(m))));
    Ok(match metric {
        Some(m) => ("ok".into(), Some(m), String::new()),
        None => (
            "no_metric".into(),
            None,
            format!("no `{}` in any summary.json", spec.metric),
        ),
    })
}

/// Every `summary.json` below `dir`.
fn summaries(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(summaries(&p));
        } else if p.file_name().is_some_and(|n| n == "summary.json")
            && let Ok(text) = std::fs::read_to_string(&p)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            out.push(v);
        }
    }
    out
}

/// Write `manifest` to `dir/manifest.<ext>` and run it.
fn round(
    spec: &ResearchLoopSpec,
    k: usize,
    change: Option<Change>,
    manifest: &Value,
    dir: &Path,
    s: &Session,
    best: Option<f64>,
) -> Result<Round, AgentError> {
    let rdir = dir.join("rounds").join(k.to_string());
    std::fs::create_dir_all(&rdir).map_err(|e| AgentError::output(&rdir, e))?;
    let file = rdir.join("manifest.yml");
    let yaml = serde_saphyr::to_string(manifest).map_err(|e| AgentError::output(&file, e))?;
    write_atomic(&file, yaml.as_bytes()).map_err(|e| AgentError::output(&file, e))?;
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(spec.run_timeout_s).min(s.budget.time_left());
    let (status, metric, detail) = run_manifest(spec, &file, &rdir, timeout)?;
    let improved =
        matches!((metric, best), (Some(m), Some(b)) if m < b) || (metric.is_some() && best.is_none());
    Ok(Round {
        round: k,
        change,
        status,
        metric,
        improved,
        detail,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Run the loop into `dir`; `summary.json`'s process part.
pub fn run(
    spec: &ResearchLoopSpec,
    target: &ProcessTarget,
    s: &mut Session,
    dir: &Path,
) -> Result<Value, AgentError> {
    let base_path = PathBuf::from(&spec.manifest);
    let (_, base) = crate::manifest::load::load(&base_path).map_err(|e| AgentError::input(&base_path, e))?;
    let researcher = target
        .persona("researcher")
        .ok_or_else(|| AgentError::input(Path::new("team.researcher"), "no such persona"))?;
    let mut current = base.clone();
    let mut best: Option<f64> = None;
    let mut rounds: Vec<Round> = Vec::new();
    let mut stopped: Option<String> = None;
    let record = |rounds: &[Round], best: Option<f64>, stopped: &Option<String>| -> Result<(), AgentError> {
        let path = dir.join("loop.json");
        let v = json!({"metric": spec.metric, "best": best, "stopped": stopped, "rounds": rounds});
        write_json(&path, &v).map_err(|e| AgentError::output(&path, e))
    };
    if spec.baseline {
        let r = round(spec, 0, None, &current, dir, s, None)?;
        s.transcript.note(format!(
            "round 0 (baseline): {} {:?} {}",
            r.status, r.metric, r.detail
        ))?;
        if r.improved {
            best = r.metric;
        }
        rounds.push(r);
        record(&rounds, best, &stopped)?;
    }
    for k in 1..=spec.rounds {
        if let Err(why) = s.budget.check_time() {
            stopped = Some(why.to_string());
            break;
        }
        let prompt = proposal_prompt(spec, &current, &rounds);
        let mut messages = vec![Message::system(&researcher.system_prompt), Message::user(prompt)];
        let mut change = None;
        let mut problem = String::new();
        for _attempt in 0..2 {
            let reply = match s.send(
                &researcher.name,
                messages.clone(),
                spec.proposal_tokens,
                researcher.temperature,
            ) {
                Ok(r) => r,
                Err(AgentError::Budget(why)) => {
                    stopped = Some(why.to_string());
                    break;
                }
                Err(e) => return Err(e),
            };
            match parse_proposal(&reply.text, &spec.knobs) {
                Ok(c) => {
                    change = Some(c);
                    break;
                }
                Err(p) => {
                    s.transcript
                        .note(format!("round {k}: not a usable proposal: {p}"))?;
                    messages.push(Message::assistant(&reply.text));
                    messages.push(Message::user(format!(
                        "That reply cannot be used: {p}. Reply again with only the JSON object."
                    )));
                    problem = p;
                }
            }
        }
        if stopped.is_some() {
            break;
        }
        let Some(c) = change else {
            rounds.push(Round {
                round: k,
                change: None,
                status: "no_proposal".into(),
                metric: None,
                improved: false,
                detail: problem,
                seconds: 0.0,
            });
            record(&rounds, best, &stopped)?;
            continue;
        };
        let mut candidate = current.clone();
        let value = if spec.knobs.iter().any(|kn| kn.path == c.path && kn.integer) {
            json!(c.value as i64)
        } else {
            json!(c.value)
        };
        if let Err(e) = set_path(&mut candidate, &c.path, value) {
            s.transcript
                .note(format!("round {k}: cannot apply the change: {e}"))?;
            rounds.push(Round {
                round: k,
                change: Some(c),
                status: "no_proposal".into(),
                metric: None,
                improved: false,
                detail: e,
                seconds: 0.0,
            });
            record(&rounds, best, &stopped)?;
            continue;
        }
        let r = round(spec, k, Some(c), &candidate, dir, s, best)?;
        s.transcript
            .note(format!("round {k}: {} {:?} {}", r.status, r.metric, r.detail))?;
        if r.improved {
            best = r.metric;
            current = candidate;
        }
        rounds.push(r);
        record(&rounds, best, &stopped)?;
    }
    record(&rounds, best, &stopped)?;
    let best_round = rounds
        .iter()
        .filter(|r| r.metric.is_some() && r.metric == best)
        .map(|r| r.round)
        .next();
    Ok(json!({
        "loop": "loop.json",
        "rounds": rounds.len(),
        "ran": rounds.iter().filter(|r| r.status != "no_proposal").count(),
        "best": best,
        "best_round": best_round,
        "stopped": stopped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs() -> Vec<Knob> {
        vec![
            Knob {
                path: "targets[0].runs[0].train.lr".into(),
                min: Some(1e-5),
                max: Some(1e-1),
                integer: false,
            },
            Knob {
                path: "targets[0].runs[0].steps".into(),
                min: Some(1.0),
                max: Some(100.0),
                integer: true,
            },
        ]
    }

    #[test]
    fn paths_parse_get_and_set() {
        assert_eq!(
            parse_path("targets[0].runs[1].lr"),
            Some(vec![
                Step::Key("targets".into()),
                Step::Index(0),
                Step::Key("runs".into()),
                Step::Index(1),
                Step::Key("lr".into())
            ])
        );
        assert_eq!(parse_path("a..b"), None);
        assert_eq!(parse_path("a[x]"), None);
        let mut v = json!({"targets": [{"runs": [{"steps": 5}]}]});
        set_path(&mut v, "targets[0].runs[0].steps", json!(7)).unwrap();
        set_path(&mut v, "targets[0].runs[0].train.lr", json!(0.01)).unwrap();
        assert_eq!(get_path(&v, "targets[0].runs[0].steps"), Some(&json!(7)));
        assert_eq!(get_path(&v, "targets[0].runs[0].train.lr"), Some(&json!(0.01)));
        assert!(
            set_path(&mut v, "targets[3].runs", json!(1))
                .unwrap_err()
                .contains("no item [3]")
        );
    }

    #[test]
    fn proposals_are_checked_against_the_knobs() {
        let c = parse_proposal(
            r#"Sure: {"path": "targets[0].runs[0].steps", "value": "40", "why": "more steps"}"#,
            &knobs(),
        )
        .unwrap();
        assert_eq!((c.value, c.why.as_str()), (40.0, "more steps"));
        for (text, want) in [
            (r#"{"path": "model.d_model", "value": 3}"#, "is not a knob"),
            (
                r#"{"path": "targets[0].runs[0].steps", "value": 4.5}"#,
                "whole numbers",
            ),
            (
                r#"{"path": "targets[0].runs[0].train.lr", "value": 5}"#,
                "outside [0.00001, 0.1]",
            ),
            (r#"{"value": 5}"#, "`path` is missing"),
            (
                r#"{"path": "targets[0].runs[0].steps", "value": "many"}"#,
                "must be a number",
            ),
            ("lower the learning rate", "no JSON object"),
        ] {
            let e = parse_proposal(text, &knobs()).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_prompt_shows_knobs_values_and_history() {
        let spec = ResearchLoopSpec {
            manifest: "m.yml".into(),
            target: None,
            rounds: 2,
            knobs: knobs(),
            metric: "val_loss".into(),
            baseline: true,
            run_timeout_s: 60.0,
            goal: String::new(),
            proposal_tokens: 64,
        };
        let current = json!({"targets": [{"runs": [{"steps": 20}]}]});
        let rounds = vec![Round {
            round: 0,
            change: None,
            status: "ok".into(),
            metric: Some(2.54321),
            improved: true,
            detail: String::new(),
            seconds: 1.0,
        }];
        let p = proposal_prompt(&spec, &current, &rounds);
        assert!(p.starts_with("Goal: lower `val_loss`"));
        assert!(p.contains("- targets[0].runs[0].steps = 20, allowed [1, 100], whole numbers"));
        assert!(p.contains("- targets[0].runs[0].train.lr = (default), allowed [0.00001, 0.1]"));
        assert!(p.contains("- round 0: unchanged: val_loss = 2.543"));
        assert!(p.ends_with("\"why\": \"<one sentence>\"}"));
    }
}
