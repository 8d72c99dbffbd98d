//! `${NAME}` substitution from the top-level `vars:` mapping (`NAME` is `[A-Za-z0-9_]+`).
//!
//! - A string that is exactly one reference (`"${d_model}"`) becomes the variable's value with its
//!   own type: a number stays a number, a mapping stays a mapping.
//! - References embedded in a longer string are replaced by the value's text: strings as they
//!   are, numbers and booleans as written, `null` as `null`, lists and mappings as compact JSON.
//! - Variables may refer to other variables (resolved once, cached); a cycle is an error, and so
//!   is an unknown name. Mapping keys are never interpolated. There is no arithmetic and no escape.
//! - Only variables that the document uses are expanded; unused ones are only checked (unknown
//!   names, cycles). Every substitution is charged its size against [`EXPANSION_BUDGET`], like the
//!   YAML parser's alias budget: variables that refer to variables can otherwise grow a 600-byte
//!   manifest into gigabytes ("billion laughs"). Going over is an error at the use that does it
//!   (inside a `vars:` definition, for a chain of variables).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::load::{join_index, join_key};

/// The most bytes (compact JSON size) that substitution may insert into a manifest, all uses
/// together. Real manifests insert a few kilobytes.
pub const EXPANSION_BUDGET: usize = 8 << 20;

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
    substitute_tracked(root).map(|_| ())
}

/// Where a whole value came from a variable: the manifest path of the use (`model.d_model`)
/// and the variable's name (`d`), for every exact reference (`"${d}"`) substituted.
pub type Origins = Vec<(String, String)>;

/// [`substitute`], also returning the [`Origins`] of substituted values, so that a later problem
/// with such a value can point at the variable's definition.
pub fn substitute_tracked(root: &mut Value) -> Result<Origins, Vec<VarProblem>> {
    let Some(map) = root.as_object_mut() else {
        return Ok(Vec::new());
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
    substitute_with_budget(map, &vars, EXPANSION_BUDGET)
}

/// [`substitute`] with an explicit budget (tests use small ones).
fn substitute_with_budget(
    map: &mut Map<String, Value>,
    vars: &Map<String, Value>,
    budget: usize,
) -> Result<Origins, Vec<VarProblem>> {
    let mut resolver = Resolver {
        vars,
        done: HashMap::new(),
        stack: Vec::new(),
        problems: Vec::new(),
        left: budget,
        budget,
        exhausted: false,
        origins: Vec::new(),
    };
    for (key, value) in map.iter_mut() {
        resolver.walk(value, key);
    }
    // why: unused definitions are checked but never expanded (an unused blow-up costs nothing).
    let mut checked = HashMap::new();
    for name in vars.keys() {
        if !resolver.done.contains_key(name) {
            resolver.check(name, &join_key("vars", name), &mut checked);
        }
    }
    if resolver.problems.is_empty() {
        Ok(resolver.origins)
    } else {
        Err(resolver.problems)
    }
}

struct Resolver<'a> {
    vars: &'a Map<String, Value>,
    /// Fully substituted values and their sizes (`None`: the definition failed, already reported).
    done: HashMap<String, Option<(Value, usize)>>,
    /// Variables being resolved, outermost first (cycle detection).
    stack: Vec<String>,
    problems: Vec<VarProblem>,
    /// Bytes substitution may still insert.
    left: usize,
    /// The whole budget (for messages).
    budget: usize,
    /// The budget ran out (reported once; nothing more is expanded).
    exhausted: bool,
    /// Exact references substituted (see [`Origins`]).
    origins: Origins,
}

impl Resolver<'_> {
    /// The substituted value of variable `name`, referenced from `at`, charged to the budget.
    fn resolve(&mut self, name: &str, at: &str) -> Option<Value> {
        if self.exhausted {
            return None;
        }
        let (value, size) = self.resolve_uncharged(name, at)?;
        if !self.charge(size, name, at) {
            return None;
        }
        Some(value)
    }

    /// Take `size` bytes from the budget for a use of `name` at `at`; false (and one problem
    /// there) when it runs out.
    fn charge(&mut self, size: usize, name: &str, at: &str) -> bool {
        if self.exhausted {
            return false;
        }
        match self.left.checked_sub(size) {
            Some(left) => {
                self.left = left;
                true
            }
            None => {
                self.exhausted = true;
                self.problems.push(VarProblem {
                    path: at.to_string(),
                    message: format!(
                        "expanding `${{{name}}}` here makes the manifest larger than {} MiB",
                        self.budget >> 20
                    ),
                    help: Some(
                        "variables that use other variables several times grow exponentially; \
                         write the value out, or use each variable fewer times"
                            .into(),
                    ),
                });
                false
            }
        }
    }

    /// The substituted value of `name` and its size, built once and cached.
    fn resolve_uncharged(&mut self, name: &str, at: &str) -> Option<(Value, usize)> {
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
        let out = (self.problems.len() == before).then(|| {
            let size = json_size(&value);
            (value, size)
        });
        self.done.insert(name.to_string(), out.clone());
        out
    }

    /// Report unknown names and cycles reachable from unused variable `name` without expanding
    /// anything. `checked`: variables already checked (true) or on the current chain (false).
    fn check(&mut self, name: &str, at: &str, checked: &mut HashMap<String, bool>) {
        if self.done.contains_key(name) || checked.get(name) == Some(&true) {
            return;
        }
        if checked.get(name) == Some(&false) {
            let start = self.stack.iter().position(|n| n == name).unwrap_or(0);
            let mut cycle: Vec<&str> = self.stack[start..].iter().map(String::as_str).collect();
            cycle.push(name);
            self.problems.push(VarProblem {
                path: at.to_string(),
                message: format!("cycle detected in manifest vars: {}", cycle.join(" -> ")),
                help: Some("a variable cannot refer to itself, directly or through others".into()),
            });
            return;
        }
        let Some(raw) = self.vars.get(name) else {
            let _ = self.resolve_uncharged(name, at);
            return;
        };
        checked.insert(name.to_string(), false);
        self.stack.push(name.to_string());
        let mut uses = Vec::new();
        collect_references(raw, &join_key("vars", name), &mut uses);
        for (path, used) in uses {
            self.check(&used, &path, checked);
        }
        self.stack.pop();
        checked.insert(name.to_string(), true);
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
            let v = self.resolve(name, path)?;
            self.origins.push((path.to_string(), name.to_string()));
            return Some(v);
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        let mut ok = true;
        for (start, end, name) in refs {
            out.push_str(&s[last..start]);
            match self.resolve(name, path) {
                Some(v) if ok => out.push_str(&stringify(&v)),
                _ => ok = false,
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

/// `(path, name)` of every reference in the strings of `value` (at manifest path `path`).
fn collect_references(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => {
            for (_, _, name) in references(s) {
                out.push((path.to_string(), name.to_string()));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_references(item, &join_index(path, i), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                collect_references(v, &join_key(path, k), out);
            }
        }
        _ => {}
    }
}

/// About the bytes `v` takes as compact JSON (what a use of it inserts).
fn json_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().fold(2, |n, i| n.saturating_add(json_size(i) + 1)),
        Value::Object(map) => map.iter().fold(2, |n, (k, v)| {
            n.saturating_add(k.len() + 4).saturating_add(json_size(v))
        }),
    }
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

    /// Ten variables, each using the previous one ten times: 10^10 copies of `x` if expanded.
    fn laughs() -> Value {
        let mut vars = Map::new();
        vars.insert("v0".into(), json!("xxxxxxxxxx"));
        for i in 1..10 {
            vars.insert(format!("v{i}"), json!(format!("${{v{}}}", i - 1).repeat(10)));
        }
        json!({"vars": vars, "model": {"name": "${v9}"}})
    }

    #[test]
    fn exponential_expansion_stops_at_the_budget() {
        let errs = run(laughs()).expect_err("over budget");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("larger than 8 MiB"), "{errs:?}");
        assert!(errs[0].path.starts_with("vars.v"), "{errs:?}");
    }

    #[test]
    fn unused_variables_are_checked_but_not_expanded() {
        let mut v = laughs();
        v["model"]["name"] = json!("plain");
        assert_eq!(
            run(v).expect("unused blow-up is harmless"),
            json!({"model": {"name": "plain"}})
        );
        let errs = run(json!({"vars": {"a": "${b}", "b": "${a}", "c": "${nope}"}, "x": 1}))
            .expect_err("unused but broken");
        assert!(errs.iter().any(|e| e.message.contains("cycle")), "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.path == "vars.c" && e.message.contains("nope")),
            "{errs:?}"
        );
    }

    #[test]
    fn repeated_uses_of_a_large_value_are_charged_each_time() {
        let mut root = json!({"vars": {"big": "y".repeat(1000)}, "l": []});
        root["l"] = Value::Array((0..100).map(|_| json!("${big}")).collect());
        let Value::Object(mut map) = root else {
            unreachable!("a mapping")
        };
        let Some(Value::Object(vars)) = map.remove("vars") else {
            unreachable!("a mapping")
        };
        let errs = substitute_with_budget(&mut map, &vars, 50_000).expect_err("100 kB > 50 kB");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].path.starts_with("l["), "{errs:?}");
    }

    #[test]
    fn exact_references_record_their_origin() {
        let mut v = json!({"vars": {"d": 8, "e": "${d}"}, "m": {"a": "${e}", "b": "x${d}"}});
        let origins = substitute_tracked(&mut v).expect("valid");
        assert!(origins.contains(&("m.a".into(), "e".into())), "{origins:?}");
        assert!(!origins.iter().any(|(p, _)| p == "m.b"), "{origins:?}");
    }

    #[test]
    fn vars_must_be_a_mapping() {
        let errs = run(json!({"vars": [1]})).expect_err("list");
        assert_eq!(errs[0].path, "vars");
    }
}
