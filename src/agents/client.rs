//! A blocking client of OpenAI's chat protocol (ureq): `POST {base}/chat/completions` and
//! `GET {base}/models`. One request, one whole reply with its usage; an error names the endpoint
//! and carries the server's own message (OpenAI's `{"error": {"message"}}`) when it sent one.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::AgentError;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// Token counts of one request, as the server reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub completion_tokens: usize,
    #[serde(default)]
    pub total_tokens: usize,
}

/// A whole reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    /// `stop`, `length`, … as the server says.
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// Whether `usage` came from the server (else it is estimated at 4 bytes a token).
    pub usage_reported: bool,
    pub seconds: f64,
}

/// Sampling settings of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub seed: u64,
    pub timeout: Duration,
}

/// A chat endpoint and the model id sent with each request.
#[derive(Debug, Clone)]
pub struct ChatClient {
    agent: ureq::Agent,
    base: String,
    model: String,
    api_key: Option<String>,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        // why: an error status carries OpenAI's error body; read it instead of a bare status.
        .http_status_as_error(false)
        .build()
        .into()
}

/// `http://host:port/v1/` → `http://host:port/v1`.
fn trim_base(base: &str) -> String {
    base.trim_end_matches('/').to_string()
}

impl ChatClient {
    pub fn new(base_url: &str, model: &str, api_key: Option<String>) -> Self {
        Self {
            agent: agent(),
            base: trim_base(base_url),
            model: model.to_string(),
            api_key,
        }
    }

    /// The base URL (`…/v1`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The model id sent with each request.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model ids `GET {base}/models` lists.
    pub fn list_models(
        base_url: &str,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<String>, AgentError> {
        let url = format!("{}/models", trim_base(base_url));
        let mut req = agent().get(&url).config().timeout_global(Some(timeout)).build();
        if let Some(k) = api_key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let resp = req.call().map_err(|e| AgentError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let (status, body) = read_body(&url, resp)?;
        if status >= 400 {
            return Err(http_error(&url, status, &body));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| AgentError::Protocol {
            url: url.clone(),
            message: format!("{e}: {}", snippet(&body)),
        })?;
        let ids: Vec<String> = v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ids)
    }

    /// Send `messages`; the whole reply.
    pub fn chat(&self, messages: &[Message], s: Sampling) -> Result<Reply, AgentError> {
        let url = format!("{}/chat/completions", self.base);
        let body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "seed": s.seed,
            "stream": false,
        });
        let started = Instant::now();
        let mut req = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(s.timeout))
            .build()
            .header("Content-Type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let resp = req.send_json(&body).map_err(|e| AgentError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let (status, text) = read_body(&url, resp)?;
        if status >= 400 {
            return Err(http_error(&url, status, &text));
        }
        parse_completion(&url, &text, started.elapsed().as_secs_f64())
    }
}

fn read_body(url: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<(u16, String), AgentError> {
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| AgentError::Unreachable {
            url: url.to_string(),
            message: format!("reading the reply: {e}"),
        })?;
    Ok((status, body))
}

/// An error status: OpenAI's `error.message` when the body has one, else the body itself.
fn http_error(url: &str, status: u16, body: &str) -> AgentError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| snippet(body));
    AgentError::Http {
        url: url.to_string(),
        status,
        message,
    }
}

/// A chat completion body → [`Reply`].
pub fn parse_completion(url: &str, text: &str, seconds: f64) -> Result<Reply, AgentError> {
    let protocol = |message: String| AgentError::Protocol {
        url: url.to_string(),
        message,
    };
    let c: Completion =
        serde_json::from_str(text).map_err(|e| protocol(format!("{e}: {}", snippet(text))))?;
    let choice = c
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| protocol("`choices` is empty".into()))?;
    let content = choice.message.content.unwrap_or_default();
    let (usage, usage_reported) = match c.usage {
        Some(u) => (u, true),
        None => {
            let completion_tokens = content.len().div_ceil(4);
            (
                Usage {
                    prompt_tokens: 0,
                    completion_tokens,
                    total_tokens: completion_tokens,
                },
                false,
            )
        }
    };
    Ok(Reply {
        text: content,
        finish_reason: choice.finish_reason,
        usage,
        usage_reported,
        seconds,
    })
}

/// The first 300 characters, for error messages.
fn snippet(s: &str) -> String {
    let cut: String = s.chars().take(300).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_completion_with_usage() {
        let body = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;
        let r = parse_completion("u", body, 0.5).unwrap();
        assert_eq!(r.text, "Paris.");
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert_eq!(r.usage.completion_tokens, 3);
        assert!(r.usage_reported);
    }

    #[test]
    fn estimates_usage_when_the_server_sends_none() {
        let body = r#"{"choices":[{"message":{"content":"12345678"}}]}"#;
        let r = parse_completion("u", body, 0.0).unwrap();
        assert_eq!(r.usage.completion_tokens, 2);
        assert!(!r.usage_reported);
    }

    #[test]
    fn a_body_that_is_not_a_completion_is_a_protocol_error() {
        for body in ["<html>", r#"{"choices":[]}"#, r#"{"data":[]}"#] {
            let e = parse_completion("http://h/v1/chat/completions", body, 0.0).unwrap_err();
            assert!(matches!(e, AgentError::Protocol { .. }), "{body}: {e}");
        }
    }

    #[test]
    fn an_error_status_carries_the_servers_message() {
        let e = http_error(
            "u",
            404,
            r#"{"error":{"message":"no model `x`","type":"invalid_request_error"}}"#,
        );
        assert_eq!(e.to_string(), "the endpoint u answered HTTP 404: no model `x`");
        let e = http_error("u", 502, "bad gateway");
        assert!(e.to_string().ends_with("bad gateway"));
    }

    #[test]
    fn an_unreachable_endpoint_is_an_error_not_a_panic() {
        // why: port 9 (discard) on loopback is closed on a normal machine.
        let c = ChatClient::new("http://127.0.0.1:9/v1", "m", None);
        let e = c
            .chat(
                &[Message::user("hi")],
                Sampling {
                    max_tokens: 1,
                    temperature: 0.0,
                    seed: 1,
                    timeout: Duration::from_secs(5),
                },
            )
            .unwrap_err();
        assert!(matches!(e, AgentError::Unreachable { .. }), "{e}");
    }
}
