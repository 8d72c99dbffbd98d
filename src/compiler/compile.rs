//! The compile chain: load → parse (vars, defaults, types) → validate → memory check (see
//! [`super::memory`]) → lower → plan; and
//! target selection on the result.

use std::path::{Path, PathBuf};

use super::plan::{Plan, TargetPlan};
use crate::manifest::load::{self, Format};
use crate::manifest::validate::strip_kind;
use crate::manifest::{Manifest, ManifestError, lower, parse, validate};

/// A manifest that compiled: its lowered form and its plan.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// The lowered manifest (serializable; the run directory stores it).
    pub lowered: Manifest,
    /// The ordered plan.
    pub plan: Plan,
    /// Forms of the original caramba that were accepted but ignored (see
    /// [`crate::manifest::legacy`]), each at its place in the file; logged as warnings.
    pub warnings: Vec<crate::manifest::Problem>,
}

/// Compile the manifest at `path`.
pub fn compile(path: &Path) -> Result<Compiled, ManifestError> {
    let (source, value) = load::load(path)?;
    finish(path, source, value)
}

/// Compile manifest `text` in `format`, as if read from `path` (tests, fuzzing, stdin).
pub fn compile_str(path: &Path, text: &str, format: Format) -> Result<Compiled, ManifestError> {
    let (source, value) = load::load_str(&path.display().to_string(), path, text.to_string(), format)?;
    finish(path, source, value)
}

fn finish(
    path: &Path,
    mut source: load::Source,
    value: serde_json::Value,
) -> Result<Compiled, ManifestError> {
    let (manifest, warnings) = parse::parse_noted(&mut source, value)?;
    for w in &warnings {
        tracing::warn!("{}", w.headline());
    }
    validate(&manifest, &source)?;
    let problems = super::memory::problems(&manifest, &source, super::memory::host_memory_bytes());
    if !problems.is_empty() {
        return Err(source.invalid(problems));
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("manifest");
    let lowered = lower(&manifest, stem);
    let plan = Plan::from_lowered(&lowered);
    Ok(Compiled {
        manifest_path: path.to_path_buf(),
        lowered,
        plan,
        warnings,
    })
}

impl Compiled {
    /// Targets selected by `--target`: `None` → all, in order; `Some(x)` → the one that `x`
    /// names, looked up in `entrypoints` first, then as `target:NAME`, `experiment:NAME` or `NAME`.
    pub fn resolve_target(&self, selector: Option<&str>) -> Result<Vec<&TargetPlan>, ManifestError> {
        match selector {
            None => Ok(self.plan.targets.iter().collect()),
            Some(s) => self.find(s).map(|t| vec![t]),
        }
    }

    /// The one target `caramba run` trains: `selector` as in [`Self::resolve_target`], else
    /// `entrypoints.default`, else the first target.
    pub fn run_target(&self, selector: Option<&str>) -> Result<&TargetPlan, ManifestError> {
        self.find(selector.unwrap_or(&self.plan.default_target))
    }

    /// The process target that `selector` (else the default target) names, if it names one.
    pub fn process(&self, selector: Option<&str>) -> Option<&crate::agents::ProcessTarget> {
        let selector = selector.unwrap_or(&self.plan.default_target);
        let name = match self.plan.entrypoints.get(selector) {
            Some(target) => target.as_str(),
            None => strip_kind(selector).ok()?,
        };
        self.plan.processes.iter().find(|p| p.name == name)
    }

    fn find(&self, selector: &str) -> Result<&TargetPlan, ManifestError> {
        let name = match self.plan.entrypoints.get(selector) {
            Some(target) => Ok(target.as_str()),
            None => strip_kind(selector),
        };
        name.ok()
            .and_then(|n| self.plan.target(n))
            .ok_or_else(|| ManifestError::UnknownTarget {
                file: self.manifest_path.display().to_string(),
                name: selector.to_string(),
                available: self.available(),
            })
    }

    fn available(&self) -> String {
        let targets: Vec<&str> = self
            .plan
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .chain(self.plan.processes.iter().map(|p| p.name.as_str()))
            .collect();
        let mut out = format!("targets: {}", targets.join(", "));
        if !self.plan.entrypoints.is_empty() {
            let eps: Vec<String> = self
                .plan
                .entrypoints
                .iter()
                .map(|(k, v)| format!("{k} → {v}"))
                .collect();
            out.push_str(&format!("; entry points: {}", eps.join(", ")));
        }
        out
    }

    /// The lowered manifest as YAML (what the run directory stores as `manifest.lowered.yml`).
    pub fn lowered_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(&self.lowered)
    }

    /// The plan as pretty JSON (`plan.json`).
    pub fn plan_json(&self) -> String {
        serde_json::to_string_pretty(&self.plan).expect("a plan is plain data: serializing it cannot fail")
    }
}
