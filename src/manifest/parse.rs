//! From the loaded value to the typed [`Manifest`]: substitute `${vars}`, inherit defaults into
//! runs, then deserialize strictly, turning serde's first error into a [`Problem`] with the full
//! manifest path (node-relative paths from `topology::spec_de` are joined on
//! [`PATH_SEP`](crate::topology::PATH_SEP)) and its line:column.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ManifestError, Problem};
use super::inherit::inherit_train_defaults;
use super::legacy;
use super::load::{Source, join_key};
use super::types::{Defaults, Manifest};
use super::vars;
use crate::topology::PATH_SEP;

/// Substitute, inherit and type `value` (the root mapping of `source`); warnings about the
/// original's forms that were accepted but ignored are logged.
pub fn parse(source: &mut Source, value: Value) -> Result<Manifest, ManifestError> {
    let (manifest, warnings) = parse_noted(source, value)?;
    for w in &warnings {
        tracing::warn!("{}", w.headline());
    }
    Ok(manifest)
}

/// [`parse`], returning the warnings instead of logging them: `!include`s, `${ENV:NAME}`,
/// `${var}`s, the original's forms rewritten ([`legacy`]), then defaults and types.
pub fn parse_noted(source: &mut Source, mut value: Value) -> Result<(Manifest, Vec<Problem>), ManifestError> {
    legacy::resolve_includes(source, &mut value)?;
    let env = legacy::substitute_env(&mut value, &|name| std::env::var(name).ok());
    if !env.is_empty() {
        let problems = env
            .into_iter()
            .map(|p| source.problem(&p.path, p.message).with_help(p.help))
            .collect();
        return Err(source.invalid(problems));
    }
    match vars::substitute_tracked(&mut value) {
        Ok(origins) => source.origins = origins,
        Err(problems) => {
            return Err(source.invalid(
                problems
                    .into_iter()
                    .map(|p| {
                        let out = source.problem(&p.path, p.message);
                        match p.help {
                            Some(h) => out.with_help(h),
                            None => out,
                        }
                    })
                    .collect(),
            ));
        }
    }
    let warnings = legacy::rewrite(source, &mut value)?;
    let source = &*source;
    let defaults = match value.get("defaults") {
        None | Some(Value::Null) => Defaults::default(),
        Some(d) => typed::<Defaults>(source, d.clone(), "defaults")?,
    };
    inherit_train_defaults(&mut value, &defaults);
    let processes = take_processes(source, &mut value)?;
    let mut manifest = typed::<Manifest>(source, value, "")?;
    manifest.processes = processes;
    Ok((manifest, warnings))
}

/// Whether a `targets:` entry is a process target (`type: process`).
fn is_process(entry: &Value) -> bool {
    entry.get("type").and_then(Value::as_str) == Some("process")
}

/// Take the process targets out of `targets:` (or `groups:`), each typed at its own path.
/// why: the experiment entries are typed here first, at the paths the user wrote, because
/// their indices shift once the processes are taken out.
fn take_processes(
    source: &Source,
    value: &mut Value,
) -> Result<Vec<crate::agents::ProcessTarget>, ManifestError> {
    let Some(key) = ["targets", "groups"]
        .into_iter()
        .find(|k| value.get(*k).is_some())
    else {
        return Ok(Vec::new());
    };
    let Some(Value::Array(items)) = value.get_mut(key) else {
        return Ok(Vec::new());
    };
    if !items.iter().any(is_process) {
        return Ok(Vec::new());
    }
    let mut processes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{key}[{i}]");
        if is_process(item) {
            let mut p = typed::<crate::agents::ProcessTarget>(source, item.clone(), &at)?;
            p.index = i;
            processes.push(p);
        } else {
            typed::<super::types::Target>(source, item.clone(), &at)?;
        }
    }
    items.retain(|item| !is_process(item));
    Ok(processes)
}

/// Deserialize `value` (found at manifest path `prefix`) as `T`, locating the first error.
pub fn typed<T: DeserializeOwned>(source: &Source, value: Value, prefix: &str) -> Result<T, ManifestError> {
    // why: a copy to look into when serde's path stops at an internally tagged mapping.
    let copy = value.clone();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let raw = e.into_inner().to_string();
        let rel = if path == "." { String::new() } else { path };
        let rel = match lookup(&copy, &rel) {
            Some(Value::Object(map)) => match offending_field(map, &raw) {
                Some(field) => join_path(&rel, field),
                None => rel,
            },
            _ => rel,
        };
        let rel = match (lookup(&copy, &rel), unknown_field(&raw)) {
            (Some(v @ Value::Object(map)), Some(field))
                if !map.contains_key(field) && rel.rsplit(['.', ']']).next() != Some(field) =>
            {
                match holder_of(v, field) {
                    Some(sub) => join_path(&rel, &sub),
                    None => rel,
                }
            }
            _ => rel,
        };
        let outer = if rel.is_empty() {
            prefix.to_string()
        } else {
            join_path(prefix, &rel)
        };
        source.invalid(vec![problem_from_serde(source, &outer, &raw)])
    })
}

/// The value at a serde path (`model.embedder`, `targets[0].runs[1]`) inside `root`.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get(key)?;
        }
        for index in indices.split(['[', ']']).filter(|i| !i.is_empty()) {
            v = v.get(index.parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

/// The one field of `map` whose value is what an `invalid type: …, expected …` or `invalid
/// value: …` message names. why: serde buffers internally tagged enums (`embedder: {type:
/// token, …}`), so its path stops at the mapping and the bad field must be found by its value.
fn offending_field<'a>(map: &'a serde_json::Map<String, Value>, message: &str) -> Option<&'a str> {
    let found = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    let found = &found[..found.find(", expected ")?];
    let mut hits = map
        .iter()
        .filter(|(k, v)| *k != "type" && unexpected(v) == found)
        .map(|(k, _)| k.as_str());
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

/// `x` of an `unknown field `x`, …` message without node-relative path prefixes.
fn unknown_field(raw: &str) -> Option<&str> {
    // why: a message with node-relative prefixes is already located by `problem_from_serde`.
    if raw.contains(PATH_SEP) {
        return None;
    }
    let rest = raw.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

/// The path (relative to `v`) of the one mapping below `v` that has the key `field`. why: serde
/// buffers internally tagged enums (`benchmarks: [{kind: perplexity, sets: […]}]`), so an unknown
/// field deeper inside one is reported at the enum's own mapping.
fn holder_of(v: &Value, field: &str) -> Option<String> {
    fn walk(v: &Value, field: &str, at: String, hits: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if map.contains_key(field) {
                    hits.push(at.clone());
                }
                for (k, child) in map {
                    walk(child, field, join_path(&at, k), hits);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, field, format!("{at}[{i}]"), hits);
                }
            }
            _ => {}
        }
    }
    let mut hits = Vec::new();
    walk(v, field, String::new(), &mut hits);
    (hits.len() == 1).then(|| hits.remove(0))
}

/// How serde describes `v` in an error (`integer `-1``, `string "x"`, `map`, …).
fn unexpected(v: &Value) -> String {
    match v {
        Value::Null => "unit value".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.is_finite() {
                format!("floating point `{f:.1}`")
            } else {
                format!("floating point `{f}`")
            }
        }
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".into(),
        Value::Object(_) => "map".into(),
    }
}

/// Join a path and a relative path (`a.b` + `[0].c` → `a.b[0].c`; `a` + `c` → `a.c`).
fn join_path(base: &str, rel: &str) -> String {
    if rel.starts_with('[') || base.is_empty() {
        format!("{base}{rel}")
    } else {
        join_key(base, rel)
    }
}

/// Turn a serde message (possibly prefixed by node-relative paths) at `path` into a problem.
fn problem_from_serde(source: &Source, path: &str, raw: &str) -> Problem {
    let mut parts: Vec<&str> = raw.split(PATH_SEP).collect();
    let message = parts.pop().unwrap_or_default();
    let mut path = parts
        .into_iter()
        .filter(|p| !p.is_empty() && *p != ".")
        .fold(path.to_string(), |acc, rel| join_path(&acc, rel));
    let (message, help) = split_serde_message(message);
    // why: serde_path_to_error already ends the path with the unknown key; node errors may not.
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.strip_suffix('`'))
        && path != field
        && !path.ends_with(&format!(".{field}"))
    {
        path = join_key(&path, field);
    }
    let help = help.map(|h| match flat_default_hint(&path) {
        Some(hint) => format!("{hint}; {h}"),
        None => h,
    });
    let p = source.problem(&path, message);
    match help {
        Some(h) => p.with_help(h),
        None => p,
    }
}

/// A hint for keys of the original: the early (v1) flat `defaults:` keys, which version 2 groups,
/// and W&B's (`wandb`, `wandb_project`, …, anywhere), which caramba does not support.
fn flat_default_hint(path: &str) -> Option<String> {
    let last = path.rsplit('.').next().unwrap_or(path);
    if last.starts_with("wandb") {
        return Some(format!(
            "W&B is not supported in caramba: remove `{last}` and write `defaults.logging.instrument: [tensorboard]` (TensorBoard event files; W&B can import them with `wandb sync`)"
        ));
    }
    let key = path.strip_prefix("defaults.")?;
    let group = match key {
        "tokenizer" | "val_frac" => "data",
        "save_every" | "seed" | "device" | "dtype" => "runtime",
        "log_every" | "eval_iters" | "eval_every" | "instrument" => "logging",
        _ => return None,
    };
    Some(format!("write it as `defaults.{group}.{key}`"))
}

/// `unknown field `x`, expected one of `a`, `b`` → ("unknown field `x`", Some("expected one of …")).
fn split_serde_message(message: &str) -> (String, Option<String>) {
    // why: the instrument list's own message (crate::instrument::kind) lists the valid names.
    if message.starts_with("unknown instrument `")
        && let Some(i) = message.find("; expected one of: ")
    {
        return (message[..i].to_string(), Some(message[i + 2..].to_string()));
    }
    for marker in ["unknown field `", "unknown variant `"] {
        if message.starts_with(marker) {
            if let Some(i) = message.find("`, expected ") {
                let help = &message[i + 3..];
                return (message[..=i].to_string(), Some(help.to_string()));
            }
            if let Some(i) = message.find("`, there are no fields") {
                return (
                    message[..=i].to_string(),
                    Some("this mapping takes no fields".into()),
                );
            }
        }
    }
    (message.to_string(), None)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::load::{Format, load_str};

    fn parse_str(text: &str) -> Result<Manifest, ManifestError> {
        let (mut src, v) = load_str("m.yml", Path::new("m.yml"), text.to_string(), Format::Yaml)?;
        parse(&mut src, v)
    }

    const HEAD: &str = "version: 2\ntargets:\n  - name: a\n    data: {path: d.npy, block_size: 8}\n    runs: [{id: r, steps: 1}]\n";

    #[test]
    fn minimal_manifest_parses() {
        let m = parse_str(HEAD).expect("valid");
        assert_eq!(m.targets[0].runs[0].steps, 1);
    }

    #[test]
    fn unknown_field_points_at_the_key() {
        let err = parse_str(&format!("{HEAD}wandb: true\n")).expect_err("unknown");
        let p = &err.problems()[0];
        assert_eq!(p.path, "wandb");
        assert_eq!(p.message, "unknown field `wandb`");
        assert_eq!((p.line, p.column), (Some(6), Some(1)));
        assert!(p.help.as_deref().is_some_and(|h| h.contains("targets")), "{p:?}");
    }

    #[test]
    fn node_relative_errors_get_the_full_path() {
        let text = format!(
            "{HEAD}model:\n  embedder: {{type: token, vocab_size: 256, d_model: 8}}\n  topology:\n    type: stacked\n    layers:\n      - {{type: rms_norm, d_model: 8}}\n      - type: residual\n        layers:\n          - {{type: AttentionLayer, d_model: 8, n_heads: x}}\n"
        );
        let err = parse_str(&text).expect_err("bad n_heads");
        let p = &err.problems()[0];
        assert_eq!(p.path, "model.topology.layers[1].layers[0].n_heads");
        assert_eq!(p.line, Some(14), "{p:?}");
        assert!(p.message.contains("invalid type"), "{}", p.message);
    }

    #[test]
    fn flat_v1_defaults_are_read_as_their_group() {
        // why: the original's v1 wrote `defaults` flat; the legacy rewrite moves each key.
        let m = parse_str(&format!("{HEAD}defaults: {{val_frac: 0.2, save_every: 7}}\n")).expect("flat");
        assert_eq!(m.defaults.data.val_frac, Some(0.2));
        assert_eq!(m.defaults.runtime.save_every, Some(7));
    }

    #[test]
    fn defaults_errors_are_reported_under_defaults() {
        let err =
            parse_str(&format!("{HEAD}defaults: {{runtime: {{device: 3}}}}\n")).expect_err("bad device");
        assert_eq!(err.problems()[0].path, "defaults.runtime.device");
    }

    #[test]
    fn instrument_lists_and_strings_reach_the_runs() {
        use crate::instrument::InstrumentKind::{Console, Live, Tensorboard};
        let m = parse_str(&format!(
            "{HEAD}defaults:\n  logging:\n    instrument: [tb, live]\n"
        ))
        .expect("list");
        assert_eq!(m.defaults.logging.instrument, Some(vec![Tensorboard, Live]));
        assert_eq!(m.targets[0].runs[0].train.instrument, [Tensorboard, Live]);
        let m = parse_str(&format!(
            "{HEAD}defaults: {{logging: {{instrument: \"rich tb+plot\"}}}}\n"
        ))
        .expect("string");
        assert_eq!(
            m.targets[0].runs[0].train.instrument,
            [Console, Tensorboard, Live]
        );
        // A run's own list wins over the defaults.
        let text = format!("{HEAD}defaults: {{logging: {{instrument: tb}}}}\n")
            .replace("steps: 1}", "steps: 1, train: {instrument: [live]}}");
        assert_eq!(
            parse_str(&text).expect("own").targets[0].runs[0].train.instrument,
            [Live]
        );
        assert!(
            parse_str(HEAD).expect("none").targets[0].runs[0]
                .train
                .instrument
                .is_empty()
        );
    }

    #[test]
    fn unknown_instrument_points_at_the_element() {
        let err = parse_str(&format!(
            "{HEAD}defaults:\n  logging:\n    instrument:\n      - tb\n      - tensorbored\n"
        ))
        .expect_err("unknown");
        let p = &err.problems()[0];
        assert_eq!(p.path, "defaults.logging.instrument[1]");
        assert_eq!((p.line, p.column), (Some(10), Some(9)), "{p:?}");
        assert_eq!(p.message, "unknown instrument `tensorbored`");
        assert!(
            p.help
                .as_deref()
                .is_some_and(|h| h.starts_with("expected one of: jsonl, tensorboard, tb, console")),
            "{p:?}"
        );
    }

    #[test]
    fn wandb_and_hdf5_say_they_are_not_supported() {
        let err = parse_str(&format!(
            "{HEAD}defaults: {{logging: {{instrument: \"rich wandb\"}}}}\n"
        ))
        .expect_err("wandb");
        let p = &err.problems()[0];
        assert_eq!(p.path, "defaults.logging.instrument");
        assert!(
            p.message
                .starts_with("`wandb` is not supported in caramba; use tensorboard or jsonl"),
            "{p:?}"
        );
        let err =
            parse_str(&format!("{HEAD}defaults: {{logging: {{instrument: [hdf5]}}}}\n")).expect_err("hdf5");
        assert!(
            err.problems()[0].message.contains("`hdf5` is not supported"),
            "{err:?}"
        );
        for key in ["wandb: true", "wandb_project: p"] {
            for text in [
                format!("{HEAD}defaults: {{logging: {{{key}}}}}\n"),
                format!("{HEAD}defaults: {{{key}}}\n"),
            ] {
                let err = parse_str(&text).expect_err("wandb key");
                let p = &err.problems()[0];
                assert!(p.message.starts_with("unknown field `wandb"), "{p:?}");
                assert!(
                    p.help
                        .as_deref()
                        .is_some_and(|h| h.starts_with("W&B is not supported in caramba")
                            && h.contains("`defaults.logging.instrument: [tensorboard]`")),
                    "{p:?}"
                );
            }
        }
        // The original's flat v1 form is read as `defaults.logging.instrument` (manifest::legacy).
        let flat = parse_str(&format!("{HEAD}defaults: {{instrument: tb}}\n")).expect("flat");
        assert_eq!(
            flat.defaults.logging.instrument,
            Some(vec![crate::instrument::InstrumentKind::Tensorboard])
        );
    }

    #[test]
    fn groups_is_an_alias_of_targets() {
        let m = parse_str(&HEAD.replace("targets:", "groups:")).expect("alias");
        assert_eq!(m.targets.len(), 1);
    }

    #[test]
    fn runtime_defaults_reach_the_runs() {
        let m = parse_str(&format!(
            "{HEAD}defaults: {{runtime: {{device: cuda}}, logging: {{log_every: 3}}}}\n"
        ))
        .expect("valid");
        assert_eq!(m.targets[0].runs[0].train.device, "cuda");
        assert_eq!(m.targets[0].runs[0].train.log_every, 3);
    }
}
