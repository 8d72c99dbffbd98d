//! `${NAME}` substitution from the top-level `vars:` mapping (`NAME` is `[A-Za-z0-9_]+`).
//!
//! - A string that is exactly one reference (`"${d_model}"`) becomes the variable's value with its
//!   own type: a number stays a number, a mapping stays a mapping.
//! - References embedded in a longer string are replaced by the value's text: strings as they
//!   are, numbers and booleans as written, `null` as `null`, lists and mappings as compact JSON.
//! - Variables may refer to other variables (resolved once, cached); a cycle is an error, and so
//!   is an unknown name. Mapping keys are never interpolated. There is no arithmetic and no escape.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::load::{join_index, join_key};

/// A substitution failure at a manifest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarProblem {
    /// Path of the string holding the reference (`model.embedder.d_model`, or `vars.x`).
    pub path: String,
    pub message: String,
    pub help: Option<String>,
}

/// Remove `vars` from the root mapping and substitute every reference in the rest. All failures
/// are returned (one per offending string).
pub fn substitute(root: &mut Value) -> Result<(), Vec<VarProblem>> {
    let Some(map) = root.as_object_mut() else {
        return Ok(());
    };
    let vars = match map.remove("vars") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(vars)) => vars,
        Some(other) => {
            return Err(vec![VarProblem {
                path: "vars".into(),
                message: format!(
                    "`vars` must be a mapping of names to values, not {}",
                    super::load::kind(&other)
                ),
                help: None,
            }]);
        }
    };
    let mut resolver = Resolver {
        vars: &vars,
        done: HashMap::new(),
        stack: Vec::new(),
        problems: Vec::new(),
    };
    // Resolve every variable first (so that bad definitions are reported even when unused).
    for name in vars.keys() {
        let _ = resolver.resolve(name, &join_key("vars", name));
    }
    for (key, value) in map.iter_mut() {
        resolver.walk(value, key);
    }
    if resolver.problems.is_empty() {
        Ok(())
    } else {
        Err(resolver.problems)
    }
}

struct Resolver<'a> {
    vars: &'a Map<String, Value>,
    /// Fully substituted values (`None`: the definition failed, already reported).
    done: HashMap<String, Option<Value>>,
    /// Variables being resolved, outermost first (cycle detection).
    stack: Vec<String>,
    problems: Vec<VarProblem>,
}

impl Resolver<'_> {
    /// The substituted value of variable `name`, referenced from `at`.
    fn resolve(&mut self, name: &str, at: &str) -> Option<Value> {
        if let Some(v) = self.done.get(name) {
            return v.clone();
        }
        if let Some(start) = self.stack.iter().position(|n| n == name) {
            let mut cycle: Vec<&str> = self.stack[start..].iter().map(String::as_str).collect();
            cycle.push(name);
            self.problems.push(VarProblem {
                path: at.to_string(),
                message: format!("cycle detected in manifest vars: {}", cycle.join(" -> ")),
                help: Some("a variable cannot refer to itself, directly or through others".into()),
            });
            return None;
        }
        let Some(raw) = self.vars.get(name) else {
            let mut known: Vec<&str> = self.vars.keys().map(String::as_str).collect();
            known.sort_unstable();
            self.problems.push(VarProblem {
                path: at.to_string(),
                message: format!("unknown manifest variable `{name}`"),
                help: Some(if known.is_empty() {
                    "there is no `vars:` mapping at the top of the manifest".into()
                } else {
                    format!("defined variables: {}", known.join(", "))
                }),
            });
            return None;
        };
        self.stack.push(name.to_string());
        let mut value = raw.clone();
        let before = self.problems.len();
        self.walk(&mut value, &join_key("vars", name));
        self.stack.pop();
        let out = (self.problems.len() == before).then_some(value);
        self.done.insert(name.to_string(), out.clone());
        out
    }

    /// Substitute inside `value` (at manifest path `path`) in place.
    fn walk(&mut self, value: &mut Value, path: &str) {
        match value {
            Value::String(s) => {
                if let Some(v) = self.interpolate(s, path) {
                    *value = v;
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.walk(item, &join_index(path, i));
                }
            }
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.walk(v, &join_key(path, k));
                }
            }
            _ => {}
        }
    }

    /// The replacement for string `s`, or `None` when it has no reference (or failed).
    fn interpolate(&mut self, s: &str, path: &str) -> Option<Value> {
        let refs = references(s);
        if refs.is_empty() {
            return None;
        }
        if let [(0, end, name)] = refs.as_slice()
            && *end == s.len()
        {
            return self.resolve(name, path);
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        let mut ok = true;
        for (start, end, name) in refs {
            out.push_str(&s[last..start]);
            match self.resolve(name, path) {
                Some(v) => out.push_str(&stringify(&v)),
                None => ok = false,
            }
            last = end;
        }
        out.push_str(&s[last..]);
        ok.then_some(Value::String(out))
    }
}

/// `(start, end, name)` of every well-formed `${NAME}` in `s`, in order.
fn references(s: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = s[from..].find("${") {
        let start = from + i;
        let body = &s[start + 2..];
        let len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if len > 0 && body[len..].starts_with('}') {
            out.push((start, start + 2 + len + 1, &body[..len]));
            from = start + 2 + len + 1;
        } else {
            from = start + 2;
        }
    }
    out
}

/// The text of a value inside a longer string.
fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(mut v: Value) -> Result<Value, Vec<VarProblem>> {
        substitute(&mut v).map(|()| v)
    }

    #[test]
    fn exact_reference_keeps_the_native_type() {
        let out = run(json!({
            "vars": {"d": 64, "scaling": {"rope_type": "llama3", "factor": 8.0}, "flag": true, "l": [1, 2]},
            "a": "${d}", "b": "${scaling}", "c": ["${flag}", "${l}"]
        }))
        .expect("valid");
        assert_eq!(
            out,
            json!({"a": 64, "b": {"rope_type": "llama3", "factor": 8.0}, "c": [true, [1, 2]]})
        );
    }

    #[test]
    fn embedded_references_stringify() {
        let out =
            run(json!({"vars": {"a": "x", "b": 3, "f": 0.5, "n": null}, "p": "${a}_${b}-${f}.${n}.pt"}))
                .expect("valid");
        assert_eq!(out["p"], "x_3-0.5.null.pt");
    }

    #[test]
    fn variables_resolve_transitively() {
        let out =
            run(json!({"vars": {"a": "${b}", "b": "${c}", "c": 7, "s": "n${a}"}, "x": "${a}", "y": "${s}"}))
                .expect("valid");
        assert_eq!(out, json!({"x": 7, "y": "n7"}));
    }

    #[test]
    fn keys_and_malformed_references_are_left_alone() {
        let out =
            run(json!({"vars": {"k": 1}, "${k}": "$k ${ } ${k-1} ${}", "m": {"${k}": 2}})).expect("valid");
        assert_eq!(out, json!({"${k}": "$k ${ } ${k-1} ${}", "m": {"${k}": 2}}));
    }

    #[test]
    fn cycles_are_reported_with_their_chain() {
        let errs = run(json!({"vars": {"a": "${b}", "b": "x${a}"}, "m": "${a}"})).expect_err("cycle");
        assert!(
            errs.iter()
                .any(|e| e.message.contains("cycle detected in manifest vars: a -> b -> a")),
            "{errs:?}"
        );
        assert!(errs.iter().all(|e| e.path.starts_with("vars.")), "{errs:?}");
    }

    #[test]
    fn unknown_variables_name_the_path() {
        let errs =
            run(json!({"vars": {"d": 1}, "model": {"layers": [{"n": "${nope}"}]}})).expect_err("unknown");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "model.layers[0].n");
        assert_eq!(errs[0].message, "unknown manifest variable `nope`");
        assert_eq!(errs[0].help.as_deref(), Some("defined variables: d"));
    }

    #[test]
    fn vars_must_be_a_mapping() {
        let errs = run(json!({"vars": [1]})).expect_err("list");
        assert_eq!(errs[0].path, "vars");
    }
}
