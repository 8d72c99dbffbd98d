//! A process target as the manifest writes it (`type: process` in `targets:`): its team of
//! personas, the endpoint it talks to, its budget and its process; and the checks validation
//! runs on it (each problem at its manifest path).
//!
//! ```yaml
//! - type: process
//!   name: write
//!   team: {writer: writer}                   # role → persona (built-in or under `personas:`)
//!   endpoint: {model: smollm2-135m}          # or {url: http://127.0.0.1:8080/v1, model: m}
//!   budget: {max_tokens: 2048, max_calls: 8, wall_time_s: 900}
//!   process: {type: paper_write, report: docs/results/smollm2_135m_dba_paper/report.json}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ProcessSpec;
use super::persona::{self, PersonaSpec};
use crate::layer::SpecProblem;

/// The `type:` of a process target; only `process`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessTag {
    #[default]
    Process,
}

/// `targets[i]` with `type: process`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessTarget {
    /// Unique among all targets (`--target NAME`); names the run directory.
    pub name: String,
    #[serde(rename = "type")]
    pub tag: ProcessTag,
    /// Free text. Default: empty.
    #[serde(default)]
    pub description: String,
    /// Role → persona name. Default: each role the process needs played by the built-in
    /// persona of the same name (`writer`, `reviewer`, `researcher`); `multiplex_chat` needs one.
    #[serde(default)]
    pub team: BTreeMap<String, String>,
    /// Personas beyond the built-ins (or replacing one of the same name). Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub personas: BTreeMap<String, PersonaSpec>,
    /// Where the model is. Default: `caramba serve` of smollm2-135m, started in-process.
    #[serde(default)]
    pub endpoint: EndpointSpec,
    /// Limits of the whole process. Every field has a default.
    #[serde(default)]
    pub budget: BudgetSpec,
    pub process: ProcessSpec,
    /// Position in `targets:` (for manifest paths); set by the parser.
    #[serde(skip)]
    pub index: usize,
}

/// `endpoint:`: any OpenAI-compatible server, or one started here.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointSpec {
    /// Base URL (`http://127.0.0.1:8080/v1`). Default: none — start `caramba serve` on a free
    /// localhost port inside this process, and stop it at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `url`: the model id sent (default: the first that `GET /models` lists). Without:
    /// the model source the in-process server loads (default: `smollm2-135m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Name of the environment variable holding the bearer key (never the key itself).
    /// Default: none (no `Authorization` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Device of the in-process server. Default: cpu.
    pub device: String,
    /// Seconds one request may take. Default: 600.
    pub timeout_s: f64,
    /// Sampling temperature of every request (a persona may set its own). Default: 0 (greedy,
    /// so that a run can be repeated).
    pub temperature: f64,
    /// `seed` sent with every request. Default: 1337.
    pub seed: u64,
}

impl Default for EndpointSpec {
    fn default() -> Self {
        Self {
            url: None,
            model: None,
            api_key_env: None,
            device: "cpu".into(),
            timeout_s: 600.0,
            temperature: 0.0,
            seed: 1337,
        }
    }
}

/// The model the in-process server loads when `endpoint.model` names none.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// `budget:`: limits of the whole process, enforced before each request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSpec {
    /// Completion tokens over all requests. Default: 4096.
    pub max_tokens: usize,
    /// `max_tokens` of one request at most. Default: 512.
    pub max_tokens_per_call: usize,
    /// Requests. Default: 32.
    pub max_calls: usize,
    /// Seconds for the whole process, requests and (research_loop) training runs. Default: 1800.
    pub wall_time_s: f64,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        Self {
            max_tokens: 4096,
            max_tokens_per_call: 512,
            max_calls: 32,
            wall_time_s: 1800.0,
        }
    }
}

impl ProcessTarget {
    /// Every inconsistency, each at a path relative to the target.
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        for (role, name) in &self.team {
            if !simple_name(role) {
                out.push(
                    SpecProblem::new(
                        format!("team.{role}"),
                        format!("role `{role}` is not a simple name"),
                    )
                    .with_help("use letters, digits, `_` and `-` (chat messages address it as `@role`)"),
                );
            }
            if persona::resolve(name, &self.personas).is_none() {
                out.push(
                    SpecProblem::new(format!("team.{role}"), format!("no persona `{name}`")).with_help(
                        format!(
                            "define it under `personas:`, or use a built-in one: {}",
                            persona::built_in_names().join(", ")
                        ),
                    ),
                );
            }
        }
        for (name, p) in &self.personas {
            if p.system_prompt.trim().is_empty() {
                out.push(SpecProblem::new(
                    format!("personas.{name}.system_prompt"),
                    "the system prompt is empty",
                ));
            }
            if let Some(t) = p.temperature {
                check_temperature(&mut out, &format!("personas.{name}.temperature"), t);
            }
        }
        if matches!(self.process, ProcessSpec::MultiplexChat(_)) && self.team.is_empty() {
            out.push(
                SpecProblem::new("team", "multiplex_chat needs at least one persona in `team:`")
                    .with_help("e.g. `team: {theorist: theorist, skeptic: skeptic, engineer: engineer}`"),
            );
        }
        let e = &self.endpoint;
        if let Some(url) = &e.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            out.push(
                SpecProblem::new("endpoint.url", format!("`{url}` is not an http(s) URL")).with_help(
                    "e.g. `http://127.0.0.1:8080/v1` (the base that `/chat/completions` is appended to)",
                ),
            );
        }
        if e.api_key_env.as_deref().is_some_and(|v| v.trim().is_empty()) {
            out.push(SpecProblem::new(
                "endpoint.api_key_env",
                "the variable name is empty",
            ));
        }
        if e.url.is_some() && e.device != EndpointSpec::default().device {
            out.push(
                SpecProblem::new(
                    "endpoint.device",
                    "`device` applies to the in-process server only",
                )
                .with_help("remove `device`, or remove `url` to start a server here"),
            );
        }
        if !(e.timeout_s.is_finite() && e.timeout_s > 0.0) {
            out.push(SpecProblem::new(
                "endpoint.timeout_s",
                "must be a positive number of seconds",
            ));
        }
        check_temperature(&mut out, "endpoint.temperature", e.temperature);
        let b = &self.budget;
        for (field, v) in [
            ("budget.max_tokens", b.max_tokens),
            ("budget.max_tokens_per_call", b.max_tokens_per_call),
            ("budget.max_calls", b.max_calls),
        ] {
            if v == 0 {
                out.push(SpecProblem::new(field, "must be at least 1"));
            }
        }
        if !(b.wall_time_s.is_finite() && b.wall_time_s > 0.0) {
            out.push(SpecProblem::new(
                "budget.wall_time_s",
                "must be a positive number of seconds",
            ));
        }
        for mut p in self.process.problems() {
            p.field = format!("process.{}", p.field);
            out.push(p);
        }
        out
    }

    /// The persona playing `role`: the team's choice, else the built-in of that name.
    pub fn persona(&self, role: &str) -> Option<persona::Persona> {
        let name = self.team.get(role).map_or(role, String::as_str);
        persona::resolve(name, &self.personas)
    }
}

fn check_temperature(out: &mut Vec<SpecProblem>, field: &str, t: f64) {
    if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
        out.push(SpecProblem::new(
            field,
            format!("temperature {t} is outside [0, 2] (0 is greedy)"),
        ));
    }
}

/// `[A-Za-z0-9_-]+`.
pub fn simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
