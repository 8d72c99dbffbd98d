//! `paper_write`: draft paper sections from a run's `report.json` and its artifacts.
//!
//! The report is flattened to facts ([`super::facts`], what the model sees, saved as
//! `facts.txt`); the `writer` persona writes each section in its own request (plain prose, the
//! facts in the prompt); the draft is assembled as Markdown (`paper.md`) or LaTeX (`paper.tex`)
//! with the facts table and the artifact list appended by code — so every number in the tables
//! is the report's — and each section's numbers that no fact supports are listed in
//! `summary.json` (`unsupported_numbers`). A spent budget leaves the remaining sections marked
//! as not written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::AgentError;
use super::facts::{self, Facts};
use super::session::Session;
use super::target::ProcessTarget;
use crate::bench::artifacts::escape_latex;
use crate::layer::SpecProblem;
use crate::record::write_atomic;

/// The output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PaperFormat {
    #[default]
    Markdown,
    Latex,
}

/// `process: {type: paper_write, …}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaperWriteSpec {
    /// The run's `report.json` (a path relative to the working directory).
    pub report: String,
    /// Folder of the run's artifacts, listed in the draft (figures linked). Default: the
    /// report's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<String>,
    /// Top-level keys of the report the model is shown. Default: `[metadata, summary]`.
    #[serde(default = "default_fact_keys")]
    pub facts: Vec<String>,
    /// Sections, one request each. Default: `[abstract, results, discussion]`.
    #[serde(default = "default_sections")]
    pub sections: Vec<String>,
    /// Default: markdown.
    #[serde(default)]
    pub format: PaperFormat,
    /// Default: the report's `metadata.name`, else "Results".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Tokens each section may take. Default: 256.
    #[serde(default = "default_section_tokens")]
    pub section_tokens: usize,
    /// Characters of facts in a prompt at most (SmolLM2's context is 8192 tokens). Default: 3000.
    #[serde(default = "default_max_fact_chars")]
    pub max_fact_chars: usize,
}

fn default_fact_keys() -> Vec<String> {
    vec!["metadata".into(), "summary".into()]
}

fn default_sections() -> Vec<String> {
    vec!["abstract".into(), "results".into(), "discussion".into()]
}

fn default_section_tokens() -> usize {
    256
}

fn default_max_fact_chars() -> usize {
    3000
}

impl PaperWriteSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        if self.report.trim().is_empty() {
            out.push(SpecProblem::new("report", "the report path is empty"));
        }
        if self.sections.is_empty() {
            out.push(
                SpecProblem::new("sections", "no sections to write")
                    .with_help("e.g. `sections: [abstract, results, discussion]`"),
            );
        }
        for (i, s) in self.sections.iter().enumerate() {
            if s.trim().is_empty() {
                out.push(SpecProblem::new(
                    format!("sections[{i}]"),
                    "a section name is empty",
                ));
            }
        }
        if self.section_tokens == 0 {
            out.push(SpecProblem::new("section_tokens", "must be at least 1"));
        }
        if self.max_fact_chars < 100 {
            out.push(SpecProblem::new("max_fact_chars", "must be at least 100"));
        }
        out
    }
}

/// One section of the draft.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub name: String,
    /// `None`: not written (the budget was spent first).
    pub text: Option<String>,
    /// Sentences dropped because the reply had already said them.
    pub repeats_dropped: usize,
    pub unsupported_numbers: Vec<String>,
    pub finish_reason: Option<String>,
}

impl Section {
    /// A section the budget left unwritten.
    fn unwritten(name: &str) -> Self {
        Self {
            name: name.to_string(),
            text: None,
            repeats_dropped: 0,
            unsupported_numbers: Vec::new(),
            finish_reason: None,
        }
    }
}

/// What guides each well-known section.
fn guidance(section: &str) -> &'static str {
    match section.to_ascii_lowercase().as_str() {
        "abstract" => "Summarize in one paragraph what was compared, how, and the main numbers.",
        "introduction" => "Say what problem the experiment addresses and why it matters.",
        "method" | "methods" => "Describe what was run: the models, the data and the measurements.",
        "results" => "Report the measured numbers and compare the candidate with the baseline.",
        "discussion" => "Say what the numbers mean, what they do not show, and what to run next.",
        "conclusion" => "State the main finding in two or three sentences.",
        _ => "Write it from the facts.",
    }
}

/// The prompt of one section (what the tests pin down).
pub fn section_prompt(facts: &Facts, artifacts: &[String], title: &str, section: &str) -> String {
    let mut p = format!(
        "Facts from the experiment's report.json (name = value):\n{}\n",
        facts.text()
    );
    if !artifacts.is_empty() {
        p.push_str(&format!("\nArtifacts of the run: {}\n", artifacts.join(", ")));
    }
    p.push_str(&format!(
        "\nWrite the {section} section of a short paper titled \"{title}\". {}\n\
         Write one to three paragraphs of plain prose, without a heading. Use only the numbers above, \
         copied exactly; do not invent results, numbers or citations.",
        guidance(section)
    ));
    p
}

/// The reply, cleaned: trimmed, without a leading heading that repeats the section's name, and
/// each sentence once (greedy decoding of a small model loops on a sentence); the number of
/// repeats dropped.
pub fn clean_section(text: &str, section: &str) -> (String, usize) {
    drop_repeats(&strip_heading(text, section))
}

/// Each sentence once, in order: a sentence equal to an earlier one (ignoring case and the
/// space around it) is dropped.
pub fn drop_repeats(text: &str) -> (String, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    let mut dropped = 0;
    for paragraph in text.split("\n\n") {
        let mut kept = String::new();
        for sentence in sentences(paragraph) {
            let key = sentence.trim().to_lowercase();
            if key.is_empty() {
                continue;
            }
            if seen.insert(key) {
                kept.push_str(sentence);
            } else {
                dropped += 1;
            }
        }
        let kept = kept.trim();
        if !kept.is_empty() {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(kept);
        }
    }
    (out, dropped)
}

/// The sentences of `text`, each with its end mark and the space after it: a sentence ends at
/// `.`, `!` or `?` followed by white space or the end (so `9.33` is not split).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at_end = chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        if matches!(c, '.' | '!' | '?') && at_end {
            out.push(&text[start..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Without a first line that only repeats the section's name.
fn strip_heading(text: &str, section: &str) -> String {
    let t = text.trim();
    let mut lines = t.lines();
    let first = lines.next().unwrap_or_default();
    let bare = first
        .trim_start_matches(['#', '*', ' ', '\\'])
        .trim_start_matches("section{")
        .trim_end_matches(['*', ':', '}', ' '])
        .to_ascii_lowercase();
    if bare == section.to_ascii_lowercase() {
        lines.collect::<Vec<_>>().join("\n").trim().to_string()
    } else {
        t.to_string()
    }
}

fn read_report(path: &Path) -> Result<Value, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::input(path, e))?;
    serde_json::from_str(&text).map_err(|e| AgentError::input(path, format!("not JSON: {e}")))
}

/// File names in `dir`, sorted (none when it cannot be read).
fn artifact_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Run `paper_write` into `dir`; `summary.json`'s process part.
pub fn run(
    spec: &PaperWriteSpec,
    target: &ProcessTarget,
    s: &mut Session,
    dir: &Path,
) -> Result<Value, AgentError> {
    let report_path = PathBuf::from(&spec.report);
    let report = read_report(&report_path)?;
    let facts = facts::collect(&report, &spec.facts, spec.max_fact_chars);
    let facts_path = dir.join("facts.txt");
    write_atomic(&facts_path, facts.text().as_bytes()).map_err(|e| AgentError::output(&facts_path, e))?;
    let artifacts_dir = spec
        .artifacts
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| report_path.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let artifacts = artifact_names(&artifacts_dir);
    let title = spec
        .title
        .clone()
        .or_else(|| report["metadata"]["name"].as_str().map(String::from))
        .unwrap_or_else(|| "Results".into());
    let writer = target
        .persona("writer")
        .ok_or_else(|| AgentError::input(Path::new("team.writer"), "no such persona"))?;
    // why: the title is the user's; its numbers (`SmolLM2-135M`) are not the model's inventions.
    let mut audit_numbers = facts.numbers.clone();
    audit_numbers.extend(facts::numbers_in(&title).into_iter().map(|(_, x)| x));
    let mut sections = Vec::new();
    let mut stopped = None;
    for name in &spec.sections {
        if stopped.is_some() {
            sections.push(Section::unwritten(name));
            continue;
        }
        let prompt = section_prompt(&facts, &artifacts, &title, name);
        match s.ask(&writer, &prompt, spec.section_tokens) {
            Ok(reply) => {
                let (text, repeats_dropped) = clean_section(&reply.text, name);
                sections.push(Section {
                    name: name.clone(),
                    repeats_dropped,
                    unsupported_numbers: facts::unsupported(&text, &audit_numbers),
                    text: Some(text),
                    finish_reason: reply.finish_reason,
                });
            }
            Err(AgentError::Budget(why)) => {
                s.transcript
                    .note(format!("stopped before section `{name}`: {why}"))?;
                stopped = Some(why.to_string());
                sections.push(Section::unwritten(name));
            }
            Err(e) => return Err(e),
        }
    }
    let model = s.client.model().to_string();
    let (file, body) = match spec.format {
        PaperFormat::Markdown => (
            "paper.md",
            markdown(
                &title,
                &sections,
                &facts,
                &artifacts_dir,
                &artifacts,
                &spec.report,
                &model,
            ),
        ),
        PaperFormat::Latex => (
            "paper.tex",
            latex(&title, &sections, &facts, &artifacts, &spec.report, &model),
        ),
    };
    let out = dir.join(file);
    write_atomic(&out, body.as_bytes()).map_err(|e| AgentError::output(&out, e))?;
    let written = sections.iter().filter(|x| x.text.is_some()).count();
    Ok(json!({
        "paper": file,
        "report": spec.report,
        "facts": facts.lines.len(),
        "facts_truncated": facts.truncated,
        "sections_written": written,
        "sections": sections,
        "stopped": stopped,
    }))
}

const DISCLAIMER: &str = "Drafted by a language model from the report's facts. A small model writes poor papers: check every claim against the facts table, and see `unsupported_numbers` in summary.json for the numbers no fact supports.";

fn markdown(
    title: &str,
    sections: &[Section],
    facts: &Facts,
    artifacts_dir: &Path,
    artifacts: &[String],
    report: &str,
    model: &str,
) -> String {
    let mut md =
        format!("# {title}\n\n> {DISCLAIMER} (caramba `paper_write`, model `{model}`, from `{report}`.)\n\n");
    for s in sections {
        md.push_str(&format!("## {}\n\n", heading(&s.name)));
        match &s.text {
            Some(t) => md.push_str(t),
            None => md.push_str("*(not written: the budget was spent first)*"),
        }
        md.push_str("\n\n");
    }
    md.push_str("## Facts (from the report)\n\n| name | value |\n|---|---|\n");
    for line in &facts.lines {
        let (k, v) = line.split_once(" = ").unwrap_or((line, ""));
        md.push_str(&format!("| `{k}` | {} |\n", v.replace('|', "\\|")));
    }
    if !artifacts.is_empty() {
        md.push_str("\n## Artifacts\n\n");
        for a in artifacts {
            let path = artifacts_dir.join(a);
            let p = path.display();
            if a.ends_with(".svg") || a.ends_with(".png") {
                md.push_str(&format!("- ![{a}]({p})\n"));
            } else {
                md.push_str(&format!("- [{a}]({p})\n"));
            }
        }
    }
    md
}

fn latex(
    title: &str,
    sections: &[Section],
    facts: &Facts,
    artifacts: &[String],
    report: &str,
    model: &str,
) -> String {
    let mut tex = format!(
        "\\documentclass{{article}}\n\\usepackage[T1]{{fontenc}}\n\\usepackage{{longtable}}\n\\title{{{}}}\n\\date{{}}\n\\begin{{document}}\n\\maketitle\n\n% {}\n% caramba paper_write, model {}, from {}\n\n",
        escape_latex(title),
        DISCLAIMER,
        model,
        report
    );
    for s in sections {
        let body = match &s.text {
            // why: escape_latex turns line breaks into spaces; keep the paragraphs.
            Some(t) => t.split("\n\n").map(escape_latex).collect::<Vec<_>>().join("\n\n"),
            None => "\\emph{(not written: the budget was spent first)}".to_string(),
        };
        if s.name.eq_ignore_ascii_case("abstract") {
            tex.push_str(&format!("\\begin{{abstract}}\n{body}\n\\end{{abstract}}\n\n"));
        } else {
            tex.push_str(&format!(
                "\\section{{{}}}\n{body}\n\n",
                escape_latex(&heading(&s.name))
            ));
        }
    }
    tex.push_str(
        "\\section*{Facts (from the report)}\n\\begin{longtable}{ll}\n\\hline\nname & value \\\\\n\\hline\n",
    );
    for line in &facts.lines {
        let (k, v) = line.split_once(" = ").unwrap_or((line, ""));
        tex.push_str(&format!(
            "\\texttt{{{}}} & {} \\\\\n",
            escape_latex(k),
            escape_latex(v)
        ));
    }
    tex.push_str("\\hline\n\\end{longtable}\n");
    if !artifacts.is_empty() {
        tex.push_str(&format!(
            "\n\\noindent Artifacts: {}.\n",
            artifacts
                .iter()
                .map(|a| format!("\\texttt{{{}}}", escape_latex(a)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    tex.push_str("\n\\end{document}\n");
    tex
}

/// `results` → `Results`.
fn heading(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>().replace('_', " "),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        facts::collect(
            &json!({"summary": {"teacher_perplexity": 15.07381938803109, "student_perplexity": 9.328138687489226}}),
            &["summary".into()],
            3000,
        )
    }

    #[test]
    fn the_prompt_holds_the_facts_the_section_and_the_rules() {
        let p = section_prompt(&facts(), &["report.json".into()], "DBA", "results");
        assert!(p.contains("summary.teacher_perplexity = 15.07"), "{p}");
        assert!(p.contains("Artifacts of the run: report.json"));
        assert!(p.contains("Write the results section of a short paper titled \"DBA\""));
        assert!(p.contains("compare the candidate with the baseline"));
        assert!(p.contains("do not invent"));
    }

    #[test]
    fn a_repeated_heading_is_dropped() {
        assert_eq!(
            clean_section("## Results\n\nThe student wins.", "results").0,
            "The student wins."
        );
        assert_eq!(
            clean_section("**Abstract:**\nWe compare.", "abstract").0,
            "We compare."
        );
        assert_eq!(
            clean_section("  The results are in.  ", "results").0,
            "The results are in."
        );
    }

    #[test]
    fn repeated_sentences_are_dropped() {
        let (t, n) = drop_repeats("A ran. B ran. A ran. B ran.\n\nA ran. C ran");
        assert_eq!((t.as_str(), n), ("A ran. B ran.\n\nC ran", 3));
        let (t, n) = drop_repeats("It is 0.5 and 0.5. It is 0.5 and 0.5.");
        assert_eq!((t.as_str(), n), ("It is 0.5 and 0.5.", 1));
    }

    #[test]
    fn drafts_have_the_sections_the_facts_and_the_disclaimer() {
        let sections = vec![
            Section {
                name: "abstract".into(),
                text: Some("We cut 50% & more.".into()),
                repeats_dropped: 0,
                unsupported_numbers: vec![],
                finish_reason: Some("stop".into()),
            },
            Section {
                name: "results".into(),
                text: None,
                repeats_dropped: 0,
                unsupported_numbers: vec![],
                finish_reason: None,
            },
        ];
        let md = markdown(
            "T",
            &sections,
            &facts(),
            Path::new("runs/x"),
            &["a.svg".into()],
            "r.json",
            "m",
        );
        assert!(md.starts_with("# T\n\n> Drafted by a language model"));
        assert!(md.contains("## Abstract\n\nWe cut 50% & more."));
        assert!(md.contains("*(not written: the budget was spent first)*"));
        assert!(md.contains("| `summary.teacher_perplexity` | 15.07 |"));
        assert!(md.contains("![a.svg](runs/x/a.svg)"));
        let tex = latex("T", &sections, &facts(), &["a_b.csv".into()], "r.json", "m");
        assert!(
            tex.contains("\\begin{abstract}\nWe cut 50\\% \\& more.\n\\end{abstract}"),
            "{tex}"
        );
        assert!(tex.contains("\\section{Results}"));
        assert!(tex.contains("\\texttt{a\\_b.csv}"));
        assert!(tex.trim_end().ends_with("\\end{document}"));
    }
}
