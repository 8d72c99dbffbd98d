//! The JSON object inside a model's reply, repaired where small models usually break it: prose
//! or a code fence around it, a reply cut off by `max_tokens` (open strings and brackets are
//! closed), single or curly quotes, unquoted keys, trailing commas, raw newlines in strings, and
//! Python's `True`/`False`/`None`. Whatever cannot be repaired is an error that says why — the
//! caller shows it to the model and asks again; nothing here panics.

use serde_json::Value;

/// A parsed object and whether it needed repairs to parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub value: Value,
    /// The reply was cut off and its open brackets were closed here.
    pub truncated: bool,
    /// The text was changed before it parsed (quotes, commas, keys, literals).
    pub repaired: bool,
}

/// The first JSON object in `text`.
pub fn extract_object(text: &str) -> Result<Extracted, String> {
    let Some((candidate, truncated)) = candidate(text) else {
        return Err("the reply holds no JSON object (no `{`)".into());
    };
    if let Ok(value) = serde_json::from_str::<Value>(&candidate) {
        return object(value, truncated, truncated);
    }
    let fixed = normalize(&candidate);
    match serde_json::from_str::<Value>(&fixed) {
        Ok(value) => object(value, truncated, true),
        Err(e) => Err(format!(
            "the JSON object does not parse even after repairs ({e}){}",
            if truncated {
                "; the reply was cut off before the object ended"
            } else {
                ""
            }
        )),
    }
}

fn object(value: Value, truncated: bool, repaired: bool) -> Result<Extracted, String> {
    if value.is_object() {
        Ok(Extracted {
            value,
            truncated,
            repaired,
        })
    } else {
        Err("the reply's JSON is not an object".into())
    }
}

/// From the first `{` to its matching `}` (quote-aware); a cut-off object is closed.
fn candidate(text: &str) -> Option<(String, bool)> {
    let start = text.find('{')?;
    let chars: Vec<char> = text[start..].chars().collect();
    let mut closers: Vec<char> = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (k, &c) in chars.iter().enumerate() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '“' => quote = Some(if c == '“' { '”' } else { c }),
            '{' => closers.push('}'),
            '[' => closers.push(']'),
            '}' | ']' => {
                closers.pop();
                if closers.is_empty() {
                    return Some((chars[..=k].iter().collect(), false));
                }
            }
            _ => {}
        }
    }
    let mut s: String = chars.iter().collect();
    if let Some(q) = quote {
        s.push(if q == '”' { '"' } else { q });
    }
    // why: a model that forgets the closing brace often ends with the code fence it opened.
    let trimmed = s.trim_end();
    let trimmed = trimmed.strip_suffix("```").unwrap_or(trimmed).trim_end();
    let mut s = trimmed.trim_end_matches(',').to_string();
    if s.ends_with(':') {
        s.push_str(" null");
    }
    while let Some(c) = closers.pop() {
        s.push(c);
    }
    Some((s, true))
}

/// Rewrite the common non-JSON into JSON, outside and inside strings as needed.
fn normalize(s: &str) -> String {
    let s = s.replace(['“', '”'], "\"").replace(['‘', '’'], "'");
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let mut out = String::with_capacity(s.len() + 16);
    let mut i = 0;
    while i < n {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                // A string (double- or single-quoted) → a double-quoted one with raw newlines
                // and inner double quotes escaped.
                out.push('"');
                i += 1;
                while i < n && chars[i] != c {
                    match chars[i] {
                        '\\' if i + 1 < n => {
                            if chars[i + 1] == '\'' {
                                out.push('\'');
                            } else {
                                out.push('\\');
                                out.push(chars[i + 1]);
                            }
                            i += 2;
                            continue;
                        }
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        '\r' => {}
                        '\t' => out.push_str("\\t"),
                        other => out.push(other),
                    }
                    i += 1;
                }
                out.push('"');
                i += 1;
            }
            ',' => {
                let mut j = i + 1;
                while j < n && chars[j].is_whitespace() {
                    j += 1;
                }
                if !(j < n && (chars[j] == '}' || chars[j] == ']')) {
                    out.push(',');
                }
                i += 1;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < n && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < n && chars[j].is_whitespace() {
                    j += 1;
                }
                if j < n && chars[j] == ':' {
                    out.push('"');
                    out.push_str(&word);
                    out.push('"');
                } else {
                    out.push_str(match word.as_str() {
                        "True" | "true" => "true",
                        "False" | "false" => "false",
                        "None" | "null" | "NULL" | "Null" => "null",
                        other => other,
                    });
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_object_in_prose_and_fences() {
        let e = extract_object("Sure! Here it is:\n```json\n{\"a\": 1, \"b\": [1, 2]}\n```\nThanks").unwrap();
        assert_eq!(e.value, json!({"a": 1, "b": [1, 2]}));
        assert!(!e.repaired && !e.truncated);
    }

    #[test]
    fn repairs_what_small_models_write() {
        let cases = [
            ("{'a': 'x', 'b': True,}", json!({"a": "x", "b": true})),
            (
                "{a: 1, b: None, c: [1, 2,],}",
                json!({"a": 1, "b": null, "c": [1, 2]}),
            ),
            ("{“a”: “x”}", json!({"a": "x"})),
            (
                "{\"a\": \"line one\nline two\"}",
                json!({"a": "line one\nline two"}),
            ),
            ("{\"a\": \"say \\'hi\\'\"}", json!({"a": "say 'hi'"})),
        ];
        for (text, want) in cases {
            let got = extract_object(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got.value, want, "{text}");
            assert!(got.repaired, "{text}");
        }
    }

    #[test]
    fn closes_a_reply_cut_off_by_max_tokens() {
        let e = extract_object("{\"score\": 6, \"strengths\": [\"clear\", \"hon").unwrap();
        assert!(e.truncated);
        assert_eq!(e.value, json!({"score": 6, "strengths": ["clear", "hon"]}));
        let e = extract_object("{\"score\": 6, \"summary\":").unwrap();
        assert_eq!(e.value, json!({"score": 6, "summary": null}));
        let e = extract_object("```json\n{\"a\": [1, 2]\n```").unwrap();
        assert_eq!(e.value, json!({"a": [1, 2]}));
    }

    #[test]
    fn says_why_when_it_cannot() {
        assert!(
            extract_object("no json here")
                .unwrap_err()
                .contains("no JSON object")
        );
        assert!(
            extract_object("{\"a\" 1 2 3}")
                .unwrap_err()
                .contains("does not parse")
        );
        assert!(extract_object("").is_err());
        assert!(extract_object("{{{{{{").is_err());
    }
}
