//! Reading a manifest file: `.yml`/`.yaml` through serde-saphyr, `.json` through serde_json, both
//! into a [`serde_json::Value`], plus a [`SpanMap`] from manifest paths to source positions.
//!
//! The span map is built by walking the YAML events of `serde_saphyr::granit_parser` (JSON is
//! valid YAML, so the same walk serves both). Paths look like `targets[0].runs[1].steps`; a
//! mapping entry is located at its key, a sequence item at its first character.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, Span};

use super::error::{ManifestError, Problem};

/// Manifest path → 1-based (line, column).
#[derive(Debug, Clone, Default)]
pub struct SpanMap {
    spans: HashMap<String, (usize, usize)>,
}

impl SpanMap {
    /// The position of `path`, else of its nearest ancestor that has one.
    pub fn lookup(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.spans.get(p) {
                return Some(*pos);
            }
            if p.is_empty() {
                return None;
            }
            p = parent_path(p);
        }
    }

    /// Locate `to` (and every path below it) where `from` (and the same path below it) was
    /// written, for a value the legacy rewrite moved. Paths that already have a place keep it.
    pub fn alias(&mut self, to: &str, from: &str) {
        let below: Vec<(String, (usize, usize))> = self
            .spans
            .iter()
            .filter_map(|(p, pos)| {
                let rest = p.strip_prefix(from)?;
                (rest.is_empty() || rest.starts_with(['.', '['])).then(|| (format!("{to}{rest}"), *pos))
            })
            .collect();
        for (p, pos) in below {
            self.spans.entry(p).or_insert(pos);
        }
    }

    /// Whether `path` itself was written in the source (no ancestor fallback).
    pub fn contains(&self, path: &str) -> bool {
        self.spans.contains_key(path)
    }

    /// Number of located paths.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when nothing was located.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// `a.b[2]` → `a.b`; `a.b` → `a`; `a` → ``.
pub fn parent_path(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// `parent` + key `key` (no leading dot at the root).
pub fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent` + sequence index.
pub fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A manifest's text, where it came from, and where each path sits in it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file as the user named it (used in messages).
    pub file: String,
    /// The file path.
    pub path: PathBuf,
    /// The whole text.
    pub text: Arc<String>,
    /// Path → position.
    pub spans: SpanMap,
    /// Values that a `${var}` put in place: use path → variable name (see
    /// [`super::vars::Origins`]). A problem inside one points at the variable's definition.
    pub origins: Vec<(String, String)>,
}

impl Source {
    /// A problem at manifest `path`, located through the span map. When a `${var}` put the
    /// value there, the problem is located at the variable's definition and says so.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        let mut message = message.into();
        let mut at = path.to_string();
        if let Some((name, definition)) = self.origin(path) {
            message.push_str(&format!(" (the value of `${{{name}}}`, defined here)"));
            at = definition;
        }
        let p = Problem::new(self.file.clone(), path, message);
        match self.spans.lookup(&at) {
            Some((line, col)) => p.at(line, col, &self.text),
            None => p,
        }
    }

    /// The variable whose value holds `path`, and the definition path matching `path` inside it
    /// (`model.emb.d_model` from `${e}` used at `model.emb` → `vars.e.d_model`).
    fn origin(&self, path: &str) -> Option<(&str, String)> {
        self.origins
            .iter()
            .filter_map(|(used, name)| {
                let rest = path.strip_prefix(used.as_str())?;
                (rest.is_empty() || rest.starts_with(['.', '['])).then(|| (used.len(), name, rest))
            })
            .max_by_key(|(len, ..)| *len)
            .map(|(_, name, rest)| (name.as_str(), format!("{}{rest}", join_key("vars", name))))
    }

    /// Wrap problems into the error of this file.
    pub fn invalid(&self, mut problems: Vec<Problem>) -> ManifestError {
        problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
        ManifestError::Invalid {
            file: self.file.clone(),
            problems,
        }
    }
}

/// The formats a manifest can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// From the file suffix (`.yml`, `.yaml`, `.json`; case-insensitive).
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yml" | "yaml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Read and parse `path`. The root must be a non-empty mapping.
pub fn load(path: &Path) -> Result<(Source, Value), ManifestError> {
    let format = Format::of(path).ok_or_else(|| ManifestError::Suffix {
        file: path.to_path_buf(),
    })?;
    let bytes = std::fs::read(path).map_err(|source| ManifestError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let text = utf8(&path.display().to_string(), bytes)?;
    load_str(&path.display().to_string(), path, text, format)
}

/// The file's text, or a problem at the first byte that is not UTF-8.
fn utf8(file: &str, bytes: Vec<u8>) -> Result<String, ManifestError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&bytes[..at]).expect("valid_up_to bounds a UTF-8 prefix");
        let line = valid.matches('\n').count() + 1;
        let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let text = Arc::new(String::from_utf8_lossy(bytes).into_owned());
        let p = Problem::new(file, "", format!("byte 0x{:02x} is not UTF-8", bytes[at]))
            .with_help("a manifest is UTF-8 text; re-save the file as UTF-8")
            .at(line, column, &text);
        ManifestError::Invalid {
            file: file.to_string(),
            problems: vec![p],
        }
    })
}

/// Parse manifest `text` (named `file` in messages).
pub fn load_str(
    file: &str,
    path: &Path,
    text: String,
    format: Format,
) -> Result<(Source, Value), ManifestError> {
    let text = Arc::new(text);
    let mut source = Source {
        file: file.to_string(),
        path: path.to_path_buf(),
        text: Arc::clone(&text),
        spans: SpanMap::default(),
        origins: Vec::new(),
    };
    let value = match format {
        Format::Yaml => serde_saphyr::from_str::<Option<Value>>(&text).map_err(|e| {
            let e = e.without_snippet();
            let message = plain_yaml_message(e);
            let p = Problem::new(file, "", format!("YAML syntax: {message}"));
            let p = match e.location() {
                Some(loc) => p.at(loc.line() as usize, loc.column() as usize, &text),
                None => p,
            };
            ManifestError::Invalid {
                file: file.to_string(),
                problems: vec![p],
            }
        })?,
        Format::Json => serde_json::from_str::<Option<Value>>(&text).map_err(|e| {
            let p = Problem::new(file, "", format!("JSON syntax: {e}"));
            let p = if e.line() > 0 {
                p.at(e.line(), e.column().max(1), &text)
            } else {
                p
            };
            ManifestError::Invalid {
                file: file.to_string(),
                problems: vec![p],
            }
        })?,
    };
    source.spans = span_map(&text);
    match value {
        Some(v @ Value::Object(_)) if v.as_object().is_some_and(|m| !m.is_empty()) => Ok((source, v)),
        Some(Value::Object(_)) | None | Some(Value::Null) => Err(source.invalid(vec![
            source
                .problem("", "the manifest is empty")
                .with_help("start with `version: 2` and a `targets:` list"),
        ])),
        Some(other) => Err(source.invalid(vec![source.problem(
            "",
            format!(
                "the manifest must be a mapping (keys: version, model, targets, …), not {}",
                kind(&other)
            ),
        )])),
    }
}

/// serde-saphyr's message without its own snippet or location suffix.
fn plain_yaml_message(e: &serde_saphyr::Error) -> String {
    let mut options = serde_saphyr::RenderOptions::default();
    options.snippets = serde_saphyr::SnippetMode::Off;
    let msg = e.render_with_options(options);
    // why: the plain rendering appends "at line L, column C"; we report the position ourselves.
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// A word for a JSON value's kind, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// Inside a complex (non-scalar) mapping key: positions are not recorded.
    Skip,
}

/// Walk the first document's events and record where every path starts. Stops quietly at the
/// first syntax error (the parse above reports it).
pub fn span_map(text: &str) -> SpanMap {
    let mut spans = HashMap::new();
    walk_nodes(text, |node, _, pos| {
        let (Node::Key(path) | Node::Value(path)) = node;
        spans.entry(path.to_string()).or_insert(pos);
    });
    SpanMap { spans }
}

/// The paths of the nodes tagged `!include` (the original's include form), with their positions.
pub fn include_sites(text: &str) -> Vec<(String, (usize, usize))> {
    let mut out = Vec::new();
    walk_nodes(text, |node, event, pos| {
        let Node::Value(path) = node else { return };
        let tag = match event {
            Event::Scalar(_, _, _, tag)
            | Event::MappingStart(_, _, tag)
            | Event::SequenceStart(_, _, tag) => tag,
            _ => return,
        };
        if tag
            .as_ref()
            .is_some_and(|t| t.handle() == "!" && t.suffix() == "include")
        {
            out.push((path.to_string(), pos));
        }
    });
    out
}

/// A node met by [`walk_nodes`]: a mapping key (its entry's path) or a value.
enum Node<'p> {
    Key(&'p str),
    Value(&'p str),
}

/// Call `f` for every mapping key and value of the first document, with its manifest path and
/// 1-based (line, column). Stops quietly at the first syntax error.
fn walk_nodes(text: &str, mut f: impl FnMut(Node<'_>, &Event<'_>, (usize, usize))) {
    let mut stack: Vec<Frame> = Vec::new();
    let pos = |s: &Span| (s.start.line(), s.start.col() + 1);
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let starts = match &event {
            Event::Scalar(..) | Event::Alias(_) => Some(false),
            Event::MappingStart(..) | Event::SequenceStart(..) => Some(true),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                None
            }
            Event::DocumentEnd => break,
            _ => None,
        };
        let Some(is_container) = starts else { continue };
        // The path of this node, if it is a value (not a mapping key).
        let path = match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Skip) => None,
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                Some(join_index(path, *next - 1))
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(join_key(path, &k)),
                None => {
                    // A key: record the entry at the key's position.
                    if let Event::Scalar(k, ..) = &event {
                        let child = join_key(path, k);
                        f(Node::Key(&child), &event, pos(&span));
                        *key = Some(k.to_string());
                    } else {
                        *key = Some("?".into());
                        if is_container {
                            stack.push(Frame::Skip);
                        }
                    }
                    continue;
                }
            },
        };
        if let Some(p) = &path {
            f(Node::Value(p), &event, pos(&span));
        }
        if is_container {
            stack.push(match (&event, path) {
                (_, None) => Frame::Skip,
                (Event::MappingStart(..), Some(path)) => Frame::Map { path, key: None },
                (_, Some(path)) => Frame::Seq { path, next: 0 },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
version: 2
model:
  topology:
    type: StackedTopology
    layers:
      - type: RMSNormLayer
        d_model: 64
      - {type: AttentionLayer, d_model: 64, n_heads: 3}
targets: []
";

    #[test]
    fn spans_point_at_keys_and_items() {
        let m = span_map(YAML);
        assert_eq!(m.lookup("version"), Some((1, 1)));
        assert_eq!(m.lookup("model.topology.layers[0]"), Some((6, 9)));
        assert_eq!(m.lookup("model.topology.layers[0].d_model"), Some((7, 9)));
        assert_eq!(m.lookup("model.topology.layers[1].n_heads"), Some((8, 45)));
        assert_eq!(m.lookup("targets"), Some((9, 1)));
    }

    #[test]
    fn lookup_falls_back_to_the_nearest_ancestor() {
        let m = span_map(YAML);
        assert_eq!(
            m.lookup("model.topology.layers[1].missing"),
            m.lookup("model.topology.layers[1]")
        );
        assert_eq!(m.lookup("nothing.here"), m.lookup(""));
    }

    #[test]
    fn yaml_syntax_errors_have_line_and_column() {
        let err = load_str(
            "m.yml",
            Path::new("m.yml"),
            "a: 1\nb: [1, 2\nc: 3\n".into(),
            Format::Yaml,
        )
        .expect_err("unclosed flow sequence");
        let p = &err.problems()[0];
        assert!(p.line.is_some() && p.column.is_some(), "{p:?}");
        assert!(p.message.starts_with("YAML syntax"), "{}", p.message);
    }

    #[test]
    fn json_is_parsed_and_located() {
        let text = "{\n  \"version\": 2,\n  \"targets\": [{\"name\": \"a\"}]\n}\n";
        let (src, v) =
            load_str("m.json", Path::new("m.json"), text.into(), Format::Json).expect("valid json");
        assert_eq!(v["version"], 2);
        assert_eq!(src.spans.lookup("targets[0].name"), Some((3, 16)));
        let err = load_str("m.json", Path::new("m.json"), "{\"a\": }".into(), Format::Json).expect_err("bad");
        assert_eq!(err.problems()[0].line, Some(1));
    }

    #[test]
    fn empty_and_scalar_documents_are_errors() {
        for text in ["", "# only a comment\n", "42\n", "[1, 2]\n", "{}\n"] {
            let err = load_str("m.yml", Path::new("m.yml"), text.into(), Format::Yaml).expect_err(text);
            assert_eq!(err.problems().len(), 1, "{text:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_located() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.yml");
        std::fs::write(&path, b"version: 2\nname: ab\xffc\n").expect("write");
        let err = load(&path).expect_err("not UTF-8");
        let p = &err.problems()[0];
        assert_eq!((p.line, p.column), (Some(2), Some(9)), "{p:?}");
        assert!(p.message.contains("0xff"), "{}", p.message);
    }

    #[test]
    fn other_suffixes_are_refused() {
        assert!(matches!(
            load(Path::new("m.toml")),
            Err(ManifestError::Suffix { .. })
        ));
        assert_eq!(Format::of(Path::new("a/B.YAML")), Some(Format::Yaml));
    }
}
