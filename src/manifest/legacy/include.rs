//! `!include path.yml`: a node replaced by the content of another YAML (or JSON) file.
//!
//! The path is relative to the including file and must stay inside the project (the nearest
//! directory above the manifest holding `.git` or `Cargo.toml`, else the manifest's own
//! directory); included files may include others, and a cycle is an error naming the chain. The
//! original's `!include {path, vars}` form is not supported: give the variables in the outer
//! manifest's `vars:`, which reach into included content like everywhere else (includes are
//! resolved before `${var}` substitution). A problem inside included content is reported at the
//! `!include` line.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::manifest::error::ManifestError;
use crate::manifest::load::{Source, include_sites};

/// Most includes followed from one manifest (a guard against a file including itself in
/// disguise, e.g. through symlinks, and against exponential fan-out).
const MAX_INCLUDES: usize = 256;

/// Replace every `!include` node of `value` (read from `source`) by the file it names.
pub fn resolve_includes(source: &Source, value: &mut Value) -> Result<(), ManifestError> {
    let sites = include_sites(&source.text);
    if sites.is_empty() {
        return Ok(());
    }
    let root = project_root(&source.path);
    let mut problems = Vec::new();
    let mut budget = MAX_INCLUDES;
    let here = canonical(&source.path);
    for (path, _) in sites {
        let p = |message: String, help: &str| source.problem(&path, message).with_help(help.to_string());
        let Some(slot) = pointer_mut(value, &path) else {
            continue;
        };
        let Some(name) = slot.as_str().map(String::from) else {
            problems.push(p(
                "`!include` takes a file path".into(),
                "write `!include blocks/attention.yml`; the original's `!include {path, vars}` form is not supported (put the variables in `vars:`)",
            ));
            continue;
        };
        let mut stack = vec![here.clone()];
        match include(&source.path, &name, &root, &mut stack, &mut budget) {
            Ok(v) => *slot = v,
            Err(message) => problems.push(p(
                message,
                "the path is relative to the including file, inside the project",
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(source.invalid(problems))
    }
}

/// The content of `name` (relative to the file `from`), its own includes resolved.
fn include(
    from: &Path,
    name: &str,
    root: &Path,
    stack: &mut Vec<PathBuf>,
    budget: &mut usize,
) -> Result<Value, String> {
    if *budget == 0 {
        return Err(format!("more than {MAX_INCLUDES} includes"));
    }
    *budget -= 1;
    let dir = from.parent().unwrap_or(Path::new("."));
    let file = dir.join(name);
    let real = std::fs::canonicalize(&file).map_err(|e| format!("cannot include {}: {e}", file.display()))?;
    if !real.starts_with(root) {
        return Err(format!(
            "`{name}` is outside the project ({}): includes must stay inside it",
            root.display()
        ));
    }
    if let Some(i) = stack.iter().position(|p| *p == real) {
        let chain: Vec<String> = stack[i..]
            .iter()
            .chain(std::iter::once(&real))
            .map(|p| p.display().to_string())
            .collect();
        return Err(format!("include cycle: {}", chain.join(" -> ")));
    }
    let text = std::fs::read_to_string(&real).map_err(|e| format!("cannot read {}: {e}", real.display()))?;
    let mut value: Value = if real.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: JSON syntax: {e}", real.display()))?
    } else {
        serde_saphyr::from_str::<Option<Value>>(&text)
            .map_err(|e| format!("{}: YAML syntax: {}", real.display(), e.without_snippet()))?
            .unwrap_or(Value::Null)
    };
    stack.push(real.clone());
    for (path, (line, col)) in include_sites(&text) {
        let Some(slot) = pointer_mut(&mut value, &path) else {
            continue;
        };
        let Some(inner) = slot.as_str().map(String::from) else {
            return Err(format!(
                "{}:{line}:{col}: `!include` takes a file path",
                real.display()
            ));
        };
        *slot = include(&real, &inner, root, stack, budget)
            .map_err(|e| format!("{}:{line}:{col}: {e}", real.display()))?;
    }
    stack.pop();
    Ok(value)
}

/// The nearest directory at or above `manifest`'s holding `.git` or `Cargo.toml`, else its own.
fn project_root(manifest: &Path) -> PathBuf {
    let dir = canonical(manifest)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    dir.ancestors()
        .find(|d| d.join(".git").exists() || d.join("Cargo.toml").exists())
        .map(Path::to_path_buf)
        .unwrap_or(dir)
}

/// `p` made absolute and canonical where it exists (a manifest compiled from text may not).
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

/// The value at manifest path `path` (`a.b[2].c`) inside `root`.
fn pointer_mut<'v>(root: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    let mut v = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get_mut(key)?;
        }
        for index in indices.split(['[', ']']).filter(|i| !i.is_empty()) {
            v = v.get_mut(index.parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}
