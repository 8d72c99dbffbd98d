//! `${ENV:NAME}`: the value of an environment variable, substituted before `${var}`s.
//!
//! A string that is exactly one reference takes the variable's value as a YAML scalar would read
//! (`"64"` → 64, `"true"` → true, anything else stays text); a reference inside a longer string is
//! replaced by the text. An unset variable is a problem at the string that names it.

use serde_json::{Map, Value};

use crate::manifest::load::{join_index, join_key};

/// A problem with a reference: the manifest path of the string and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvProblem {
    pub path: String,
    pub message: String,
    pub help: String,
}

/// Substitute every `${ENV:NAME}` in the strings of `root`, reading variables through `lookup`.
pub fn substitute_env(root: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<EnvProblem> {
    let mut problems = Vec::new();
    walk(root, "", lookup, &mut problems);
    problems
}

fn walk(v: &mut Value, path: &str, lookup: &dyn Fn(&str) -> Option<String>, out: &mut Vec<EnvProblem>) {
    match v {
        Value::String(s) if s.contains("${ENV:") => match expand(s, lookup) {
            Ok(Expanded::Whole(text)) => *v = scalar(&text),
            Ok(Expanded::Text(text)) => *s = text,
            Err(name) => out.push(EnvProblem {
                path: path.to_string(),
                message: format!("environment variable `{name}` is not set (named by `${{ENV:{name}}}`)"),
                help: format!("set it (`export {name}=…`) before running caramba, or write the value itself"),
            }),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &join_index(path, i), lookup, out);
            }
        }
        Value::Object(map) => walk_map(map, path, lookup, out),
        _ => {}
    }
}

fn walk_map(
    map: &mut Map<String, Value>,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<EnvProblem>,
) {
    for (k, child) in map.iter_mut() {
        walk(child, &join_key(path, k), lookup, out);
    }
}

enum Expanded {
    /// The string was exactly one reference: its value, to be read as a scalar.
    Whole(String),
    Text(String),
}

/// Replace the references of `s`; `Err(name)` for the first unset variable.
fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let mut out = String::new();
    let mut rest = s;
    let mut refs = 0;
    let mut whole = None;
    while let Some(i) = rest.find("${ENV:") {
        let after = &rest[i + 6..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            // why: not a reference (as with `${a-b}`, left as written).
            out.push_str(&rest[..i + 6]);
            rest = after;
            continue;
        }
        let value = lookup(name).ok_or_else(|| name.to_string())?;
        refs += 1;
        if i == 0 && end + 7 == rest.len() && out.is_empty() {
            whole = Some(value.clone());
        }
        out.push_str(&rest[..i]);
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    match whole {
        Some(v) if refs == 1 => Ok(Expanded::Whole(v)),
        _ => Ok(Expanded::Text(out)),
    }
}

/// A variable's text as a YAML plain scalar reads: integer, float, boolean, else the text.
fn scalar(text: &str) -> Value {
    let t = text.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = t.parse::<f64>()
        && f.is_finite()
        && t.chars().any(|c| c.is_ascii_digit())
    {
        return Value::from(f);
    }
    match t {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "D" => Some("64".into()),
            "DATA" => Some("data/x.npy".into()),
            _ => None,
        }
    }

    #[test]
    fn whole_references_are_typed_and_inner_ones_are_text() {
        let mut v =
            json!({"a": "${ENV:D}", "b": "runs/${ENV:DATA}.log", "c": ["${ENV:DATA}"], "d": "${ENV:x-y}"});
        assert!(substitute_env(&mut v, &env).is_empty());
        assert_eq!(
            v,
            json!({"a": 64, "b": "runs/data/x.npy.log", "c": ["data/x.npy"], "d": "${ENV:x-y}"})
        );
    }

    #[test]
    fn an_unset_variable_is_a_problem_at_its_string() {
        let mut v = json!({"targets": [{"data": {"path": "${ENV:NOPE}"}}]});
        let p = substitute_env(&mut v, &env);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "targets[0].data.path");
        assert!(p[0].message.contains("`NOPE` is not set"), "{}", p[0].message);
    }
}
