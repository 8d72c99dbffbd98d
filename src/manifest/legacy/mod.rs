//! The original (Python) caramba's manifest forms, rewritten into today's before typing.
//!
//! People come over with manifests written for the original: v1 files with flat `defaults`, a
//! group's `data: "path.npy"`, runs with `mode`/`exp`/`expected`, benchmarks written as
//! `{id, config: {type, …}, models, repeats}`, PyTorch spellings (`device: mps`,
//! `dtype: bfloat16`, `gradient_accumulation_steps`), component specs (`{ref, impl, config}`),
//! `${ENV:NAME}` references and `!include`. This module rewrites the *untyped* tree into the form
//! the typed manifest reads, so that typing, validation and lowering see one schema:
//!
//! - a form with a meaning here is moved or renamed, and the new path keeps the old one's
//!   line:column (errors found later still point at what the user wrote);
//! - a form whose value asks for nothing here (`compile_model: false`, `num_workers: 0`,
//!   `use_cache: true`) is dropped, sometimes with a warning when it is not obviously a no-op;
//! - a form that can only mean something Python-specific (`impl: python:…`, `compile_model: true`,
//!   tiktoken) is a problem whose help says what to write instead.
//!
//! What is left is typed as usual, so a key this module does not know is still an unknown field.
//! The full table of forms is in docs/manifests.md ("Coming from the Python caramba").

mod benchmarks;
mod env;
mod include;
mod targets;

use serde_json::{Map, Value};

use super::error::{ManifestError, Problem};
use super::load::{Source, join_key};

pub use benchmarks::BENCHMARK_FIELDS;
pub use env::substitute_env;
pub use include::resolve_includes;

/// The flat v1 `defaults:` keys and the group each one belongs to today.
pub const FLAT_DEFAULTS: &[(&str, &str)] = &[
    ("tokenizer", "data"),
    ("val_frac", "data"),
    ("save_every", "runtime"),
    ("seed", "runtime"),
    ("device", "runtime"),
    ("dtype", "runtime"),
    ("log_every", "logging"),
    ("eval_iters", "logging"),
    ("eval_every", "logging"),
    ("instrument", "logging"),
    ("wandb", "logging"),
    ("wandb_project", "logging"),
    ("wandb_entity", "logging"),
    ("wandb_mode", "logging"),
];

/// The original's model `type:` short names (its v1 alias table).
pub const MODEL_TYPE_ALIASES: &[(&str, &str)] = &[
    ("transformer", "TransformerModel"),
    ("gpt", "GPTModel"),
    ("vit", "ViTModel"),
    ("mlp", "MLPModel"),
];

/// Rewrite the original's forms in `value` (after `${var}` substitution, before typing). Returns
/// the warnings (forms accepted but ignored); problems are errors located at what the user wrote.
pub fn rewrite(source: &mut Source, value: &mut Value) -> Result<Vec<Problem>, ManifestError> {
    // why: v1's `groups:` is `targets:`; renamed here (keeping its spans) so that every later
    // stage, validation included, finds what it reports at the lines the user wrote.
    if let Some(root) = value.as_object_mut()
        && !root.contains_key("targets")
        && let Some(groups) = root.remove("groups")
    {
        root.insert("targets".into(), groups);
        source.spans.alias("targets", "groups");
    }
    let (problems, warnings, moves) = {
        let mut r = Rewriter::new(source);
        if let Some(root) = value.as_object_mut() {
            r.root(root);
        }
        (r.problems, r.warnings, r.moves)
    };
    for (from, to) in &moves {
        source.spans.alias(to, from);
    }
    if problems.is_empty() {
        Ok(warnings)
    } else {
        Err(source.invalid(problems))
    }
}

/// The walk: problems, warnings, and the moves whose spans must follow the values.
pub(crate) struct Rewriter<'a> {
    src: &'a Source,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// (old path, new path) of every moved value.
    moves: Vec<(String, String)>,
}

impl<'a> Rewriter<'a> {
    fn new(src: &'a Source) -> Self {
        Self {
            src,
            problems: Vec::new(),
            warnings: Vec::new(),
            moves: Vec::new(),
        }
    }

    fn err(&mut self, path: &str, message: impl Into<String>, help: impl Into<String>) {
        let p = self.src.problem(path, message).with_help(help);
        self.problems.push(p);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        let p = self.src.problem(path, message);
        self.warnings.push(p);
    }

    fn moved(&mut self, from: &str, to: &str) {
        self.moves.push((from.to_string(), to.to_string()));
    }

    fn root(&mut self, root: &mut Map<String, Value>) {
        if root.contains_key("variables") && !root.contains_key("vars") {
            self.err(
                "variables",
                "template manifests (`variables:`, `instrumentation:`, `x-` anchors) are not supported",
                "write the values under `vars:` and the settings under `defaults:`, `model:` and `targets:` (see docs/manifests.md)",
            );
        }
        if let Some(Value::Object(d)) = root.get_mut("defaults") {
            self.defaults(d);
        }
        if let Some(m) = root.get_mut("model") {
            self.model(m);
        }
        for key in ["targets", "groups"] {
            let Some(Value::Array(items)) = root.get_mut(key) else {
                continue;
            };
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Object(t) = item {
                    self.target(t, &format!("{key}[{i}]"));
                }
            }
        }
    }

    /// Flat v1 `defaults:` keys move into their group; PyTorch spellings of values are renamed.
    fn defaults(&mut self, d: &mut Map<String, Value>) {
        for (key, group) in FLAT_DEFAULTS {
            let Some(v) = d.remove(*key) else { continue };
            let from = join_key("defaults", key);
            let to = join_key(&join_key("defaults", group), key);
            let slot = d
                .entry(group.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let left = match slot {
                Value::Object(g) if g.contains_key(*key) => {
                    self.err(
                        &from,
                        format!("`{key}` is written twice: flat (the early form) and as `{to}`"),
                        format!("keep one; today's form is `{to}`"),
                    );
                    None
                }
                Value::Object(g) => {
                    g.insert(key.to_string(), v);
                    self.moved(&from, &to);
                    None
                }
                // why: a group that is not a mapping is reported by typing; the key stays put.
                _ => Some(v),
            };
            if let Some(v) = left {
                d.insert(key.to_string(), v);
            }
        }
        if let Some(Value::Object(rt)) = d.get_mut("runtime") {
            self.spellings(rt);
        }
        if let Some(Value::Object(data)) = d.get_mut("data") {
            self.tokenizer(data, "defaults.data");
        }
    }

    /// `type: transformer` (and the other v1 short names) of a model mapping.
    fn model(&mut self, model: &mut Value) {
        let Some(Value::String(ty)) = model.get_mut("type") else {
            return;
        };
        let lower = ty.to_ascii_lowercase();
        if let Some((_, canonical)) = MODEL_TYPE_ALIASES.iter().find(|(a, _)| *a == lower) {
            *ty = canonical.to_string();
        }
    }

    /// `device: mps` → `metal`; `dtype: bfloat16` → `bf16` (and the other torch spellings).
    fn spellings(&mut self, m: &mut Map<String, Value>) {
        if let Some(Value::String(dev)) = m.get_mut("device")
            && dev == "mps"
        {
            *dev = "metal".into();
        }
        if let Some(Value::String(dt)) = m.get_mut("dtype")
            && let Some(short) = dtype_spelling(dt)
        {
            *dt = short.into();
        }
    }

    /// Tokenizer names of the original: `llama` (the Llama teacher's), `tiktoken…` (Python only).
    fn tokenizer(&mut self, m: &mut Map<String, Value>, path: &str) {
        let Some(Value::String(tk)) = m.get_mut("tokenizer") else {
            return;
        };
        if tk == "llama" || tk == "hf" || tk == "huggingface" {
            // why: the original's `llama` loaded meta-llama/Llama-3.2-1B's tokenizer, which is the
            // teacher's own in every manifest that names it (the Llama → DBA upcycles).
            *tk = "teacher".into();
        } else if tk.starts_with("tiktoken") {
            let at = join_key(path, "tokenizer");
            self.err(
                &at,
                format!("tokenizer `{tk}` is OpenAI's Python tiktoken library, which caramba does not have"),
                "write `bytes`, `teacher` (an upcycle's teacher tokenizer) or the path of an HF tokenizer.json \
                 (GPT-2's `tokenizer.json` is the same BPE as tiktoken's gpt2)",
            );
        }
    }
}

/// Today's spelling of a PyTorch dtype name (`float32` → `f32`), when it is one.
pub fn dtype_spelling(dt: &str) -> Option<&'static str> {
    Some(match dt {
        "float32" | "fp32" | "float" | "torch.float32" => "f32",
        "bfloat16" | "torch.bfloat16" => "bf16",
        "float16" | "fp16" | "half" | "torch.float16" => "f16",
        _ => return None,
    })
}

/// A non-negative integer value, if `v` is one (also written as a string of digits).
fn as_count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether `v` asks for nothing: `false`, `0`, `null`, `"none"`, `"off"`, `"auto"`.
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => matches!(s.as_str(), "none" | "off" | "false" | "auto" | "disabled"),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
