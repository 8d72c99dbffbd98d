//! A review verdict (the seed's `paper_review` output): `overall_score` (1–10),
//! `recommendation` ∈ approve | style_fix | clarification | new_experiment | major_revision,
//! a summary, strengths, weaknesses and at most `max_proposed_experiments` proposed experiments;
//! and [`parse_verdict`], which reads one out of a model's reply leniently (see
//! [`super::lenient_json`]) and says exactly what is missing or wrong when it cannot.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lenient_json::extract_object;

/// How demanding the reviewer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strictness {
    Workshop,
    #[default]
    Conference,
    Journal,
    TopVenue,
}

impl Strictness {
    /// The bar, in the reviewer's prompt.
    pub fn bar(self) -> &'static str {
        match self {
            Self::Workshop => {
                "a workshop: early, honest results are welcome; ask for clarity and for the numbers to back each claim"
            }
            Self::Conference => {
                "a main conference: claims must be supported by the experiments shown, with baselines and the cost of the method"
            }
            Self::Journal => {
                "a journal: the work must be complete, with ablations, several seeds or error bars, and a discussion of limits"
            }
            Self::TopVenue => {
                "a top venue: only a clear, well-supported advance over strong baselines is approved; anything less needs revision"
            }
        }
    }

    /// The lowest score this level approves at (the verdict records whether the model's
    /// recommendation agrees).
    pub fn approve_at(self) -> f64 {
        match self {
            Self::Workshop => 5.0,
            Self::Conference => 6.0,
            Self::Journal => 7.0,
            Self::TopVenue => 8.0,
        }
    }
}

/// What the reviewer recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    Approve,
    StyleFix,
    Clarification,
    NewExperiment,
    MajorRevision,
}

impl Recommendation {
    pub const ALL: [Recommendation; 5] = [
        Self::Approve,
        Self::StyleFix,
        Self::Clarification,
        Self::NewExperiment,
        Self::MajorRevision,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::StyleFix => "style_fix",
            Self::Clarification => "clarification",
            Self::NewExperiment => "new_experiment",
            Self::MajorRevision => "major_revision",
        }
    }

    /// `approve`, `Style fix`, `new-experiment`, and the usual synonyms (`accept`, `minor
    /// revision`, `reject`, …); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let k: String = s
            .trim()
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
            .chars()
            .map(|c| if c == ' ' || c == '-' { '_' } else { c })
            .collect();
        Some(match k.as_str() {
            "approve" | "approved" | "accept" | "accepted" | "strong_accept" | "weak_accept" => Self::Approve,
            "style_fix" | "style_fixes" | "style" | "minor_revision" | "minor_revisions" | "minor" => {
                Self::StyleFix
            }
            "clarification" | "clarifications" | "clarify" => Self::Clarification,
            "new_experiment" | "new_experiments" | "more_experiments" | "experiment" | "experiments" => {
                Self::NewExperiment
            }
            "major_revision" | "major_revisions" | "major" | "reject" | "rejected" | "weak_reject"
            | "strong_reject" | "revise" => Self::MajorRevision,
            _ => return None,
        })
    }
}

/// `review.json`'s verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// 1 (worst) to 10 (best).
    pub overall_score: f64,
    pub recommendation: Recommendation,
    pub summary: String,
    pub strengths: Vec<String>,
    pub weaknesses: Vec<String>,
    pub proposed_experiments: Vec<String>,
}

/// A verdict read from a reply, with what was done to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub verdict: Verdict,
    /// The JSON needed repairs (or was cut off) to parse.
    pub repaired: bool,
    /// Lenient readings worth recording (a synonym, a missing list, experiments cut to the cap).
    pub notes: Vec<String>,
}

/// The verdict in `text`; `Err` says what is wrong, in words the model can act on.
pub fn parse_verdict(text: &str, max_experiments: usize) -> Result<Parsed, String> {
    let extracted = extract_object(text)?;
    let obj = extracted
        .value
        .as_object()
        .ok_or_else(|| "the JSON is not an object".to_string())?;
    let mut notes = Vec::new();
    let field = |names: &[&str]| names.iter().find_map(|n| obj.get(*n)).filter(|v| !v.is_null());
    let score = match field(&["overall_score", "score", "overall", "rating"]) {
        None => return Err("`overall_score` is missing (a number from 1 to 10)".into()),
        Some(v) => {
            number(v).ok_or_else(|| format!("`overall_score` must be a number from 1 to 10, got {v}"))?
        }
    };
    if !(1.0..=10.0).contains(&score) {
        return Err(format!("`overall_score` {score} is outside 1 to 10"));
    }
    let rec_value = field(&["recommendation", "decision", "verdict"])
        .ok_or_else(|| format!("`recommendation` is missing (one of: {})", names()))?;
    let rec_text = rec_value
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| rec_value.to_string());
    let recommendation = Recommendation::parse(&rec_text)
        .ok_or_else(|| format!("`recommendation` must be one of: {}; got {rec_value}", names()))?;
    if recommendation.name() != rec_text.trim() {
        notes.push(format!(
            "recommendation `{rec_text}` read as `{}`",
            recommendation.name()
        ));
    }
    let summary = field(&["summary", "comments"]).map(text_of).unwrap_or_default();
    let mut list = |names: &[&str], what: &str| -> Vec<String> {
        match field(names) {
            None => {
                notes.push(format!("no `{what}` given"));
                Vec::new()
            }
            Some(v) => strings(v),
        }
    };
    let strengths = list(&["strengths", "pros"], "strengths");
    let weaknesses = list(&["weaknesses", "cons"], "weaknesses");
    let mut proposed_experiments = list(&["proposed_experiments", "experiments"], "proposed_experiments");
    if proposed_experiments.len() > max_experiments {
        notes.push(format!(
            "{} proposed experiments cut to max_proposed_experiments = {max_experiments}",
            proposed_experiments.len()
        ));
        proposed_experiments.truncate(max_experiments);
    }
    Ok(Parsed {
        verdict: Verdict {
            overall_score: score,
            recommendation,
            summary,
            strengths,
            weaknesses,
            proposed_experiments,
        },
        repaired: extracted.repaired || extracted.truncated,
        notes,
    })
}

fn names() -> String {
    Recommendation::ALL.map(|r| r.name()).join(", ")
}

/// `7`, `7.5`, `"7"`, `"7/10"`, `"7 out of 10"`.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => first_number(s),
        _ => None,
    }
}

/// The first decimal number in `s`.
pub fn first_number(s: &str) -> Option<f64> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let rest = &s[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].trim_end_matches('.').parse().ok()
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

/// A list of strings from a list (of strings or objects) or one string.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Object(m) => m
                    .values()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(": "),
                other => text_of(other),
            })
            .filter(|s| !s.is_empty())
            .collect(),
        Value::String(s) if s.trim().is_empty() => Vec::new(),
        other => vec![text_of(other)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_clean_verdict() {
        let p = parse_verdict(
            r#"{"overall_score": 6, "recommendation": "new_experiment", "summary": "ok",
                "strengths": ["clear"], "weaknesses": ["one seed"], "proposed_experiments": ["3 seeds"]}"#,
            3,
        )
        .unwrap();
        assert_eq!(p.verdict.recommendation, Recommendation::NewExperiment);
        assert_eq!(p.verdict.overall_score, 6.0);
        assert!(!p.repaired && p.notes.is_empty(), "{p:?}");
    }

    #[test]
    fn reads_what_a_small_model_writes() {
        let p = parse_verdict(
            "Here is my review:\n```\n{'score': '7/10', 'recommendation': 'Minor revision', strengths: 'clear writing', \
             'proposed_experiments': ['a', 'b', 'c', 'd'],}\n```",
            2,
        )
        .unwrap();
        assert_eq!(p.verdict.overall_score, 7.0);
        assert_eq!(p.verdict.recommendation, Recommendation::StyleFix);
        assert_eq!(p.verdict.strengths, vec!["clear writing"]);
        assert_eq!(p.verdict.proposed_experiments, vec!["a", "b"]);
        assert!(p.repaired);
        assert!(p.notes.iter().any(|n| n.contains("cut to")), "{:?}", p.notes);
        assert!(
            p.notes.iter().any(|n| n.contains("no `weaknesses`")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn says_what_is_wrong() {
        let cases = [
            ("I think the paper is good.", "no JSON object"),
            (r#"{"recommendation": "approve"}"#, "`overall_score` is missing"),
            (
                r#"{"overall_score": 42, "recommendation": "approve"}"#,
                "outside 1 to 10",
            ),
            (
                r#"{"overall_score": "high", "recommendation": "approve"}"#,
                "must be a number",
            ),
            (r#"{"overall_score": 5}"#, "`recommendation` is missing"),
            (
                r#"{"overall_score": 5, "recommendation": "maybe"}"#,
                "must be one of",
            ),
            ("[1, 2, 3]", "no JSON object"),
        ];
        for (text, want) in cases {
            let e = parse_verdict(text, 3).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn parsing_never_panics_on_garbage() {
        use proptest::prelude::*;
        proptest!(|(s in "\\PC{0,200}")| {
            let _ = parse_verdict(&s, 3);
        });
        for s in [
            "{",
            "{\"",
            "{'",
            "{\"overall_score\": 1e999, \"recommendation\": \"approve\"}",
            "{\"a\":[[[[",
            "}{",
        ] {
            let _ = parse_verdict(s, 0);
        }
    }

    #[test]
    fn recommendation_synonyms() {
        assert_eq!(Recommendation::parse("Accept"), Some(Recommendation::Approve));
        assert_eq!(
            Recommendation::parse("major revision."),
            Some(Recommendation::MajorRevision)
        );
        assert_eq!(
            Recommendation::parse("new-experiment"),
            Some(Recommendation::NewExperiment)
        );
        assert_eq!(Recommendation::parse("banana"), None);
    }
}
