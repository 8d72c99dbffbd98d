//! OpenAI's wire format (serde): the request bodies of `/v1/chat/completions` and
//! `/v1/completions`, the responses, the streamed chunks and the model list. Requests are parsed
//! leniently about fields this server ignores (clients send `user`, `logit_bias`, …) and strictly
//! about the ones it reads: a wrong type names the field. [`parse`] turns a body into a
//! [`GenerationRequest`] whose values are checked.

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::infer::{Message, SamplingParams};

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message's `content`: a string, or a list of parts of which only `text` parts are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part `content`.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// One message of `messages`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// `null` for an assistant turn that only called tools: read as empty.
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send one more chunk, with empty `choices`, carrying `usage`. Default: false.
    #[serde(default)]
    pub include_usage: bool,
}

/// The body of `POST /v1/chat/completions` (with `messages`) and `POST /v1/completions` (with
/// `prompt`): one struct, so that a wrong type anywhere names its field (serde's `flatten` would
/// lose the path).
#[derive(Debug, Clone, Deserialize)]
pub struct RequestBody {
    pub model: String,
    /// Chat completions only.
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    /// Text completions only.
    #[serde(default)]
    pub prompt: Option<Prompt>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Default: 1.0 (OpenAI's).
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

/// `prompt` of `/v1/completions`: a string, or a list holding one string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// What to generate from: chat turns (rendered with the model's template) or a raw prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Chat(Vec<Message>),
    Prompt(String),
}

/// A parsed and checked request of either endpoint.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub model: String,
    pub input: Input,
    /// `max_tokens` (or `max_completion_tokens`) as asked; `None`: up to the server's limit.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    /// Stop strings (empty ones dropped).
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Most stop strings a request may give (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;

/// Parse a JSON body as `T`; a syntax or type error names the field and says what was expected.
pub fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "the request body is not valid JSON"
        } else {
            "invalid request"
        };
        let err = ApiError::bad_request(format!("{what}: {inner}"));
        if path.is_empty() || path == "." {
            err
        } else {
            err.with_param(path)
        }
    })
}

/// A chat completion request, checked.
pub fn parse_chat(body: &[u8]) -> Result<GenerationRequest, ApiError> {
    let req: RequestBody = from_json(body)?;
    let Some(list) = &req.messages else {
        return Err(ApiError::invalid_param("messages", "missing field `messages`"));
    };
    if list.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must hold at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "user" | "assistant" | "tool" => m.role.clone(),
            // why: OpenAI's newer name for the system role; templates know only `system`.
            "developer" => "system".to_string(),
            other => {
                return Err(ApiError::invalid_param(
                    format!("messages[{i}].role"),
                    format!("unknown role `{other}`: expected system, developer, user, assistant or tool"),
                ));
            }
        };
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(s)) => s.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        ("text", None) => {
                            return Err(ApiError::invalid_param(
                                format!("messages[{i}].content[{j}].text"),
                                "a text part needs `text`",
                            ));
                        }
                        (other, _) => {
                            return Err(ApiError::invalid_param(
                                format!("messages[{i}].content[{j}].type"),
                                format!("content parts of type `{other}` are not supported: only `text`"),
                            ));
                        }
                    }
                }
                text
            }
        };
        messages.push(Message::new(&role, content));
    }
    common(req, Input::Chat(messages))
}

/// A text completion request, checked.
pub fn parse_completion(body: &[u8]) -> Result<GenerationRequest, ApiError> {
    let mut req: RequestBody = from_json(body)?;
    let prompt = match req.prompt.take() {
        None => return Err(ApiError::invalid_param("prompt", "missing field `prompt`")),
        Some(Prompt::One(p)) => p,
        Some(Prompt::Many(mut list)) if list.len() == 1 => list.remove(0),
        Some(Prompt::Many(list)) => {
            return Err(ApiError::invalid_param(
                "prompt",
                format!(
                    "`prompt` must be one string (this server does not batch {} prompts in one request)",
                    list.len()
                ),
            ));
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid_param("prompt", "`prompt` is empty"));
    }
    common(req, Input::Prompt(prompt))
}

/// Check the shared fields.
fn common(c: RequestBody, input: Input) -> Result<GenerationRequest, ApiError> {
    if let Some(n) = c.n
        && n != 1
    {
        return Err(ApiError::invalid_param(
            "n",
            format!("n = {n}: only n = 1 is supported"),
        ));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::invalid_param(
            "temperature",
            format!("temperature = {temperature}: must be in [0, 2] (0 is greedy)"),
        ));
    }
    if let Some(p) = c.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid_param(
            "top_p",
            format!("top_p = {p}: must be in (0, 1]"),
        ));
    }
    let max_tokens = match (c.max_tokens, c.max_completion_tokens) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid_param(
                "max_tokens",
                "`max_tokens` and `max_completion_tokens` disagree; give one",
            ));
        }
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    if max_tokens == Some(0) {
        return Err(ApiError::invalid_param(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    let stop: Vec<String> = match c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(list)) => list,
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid_param(
            "stop",
            format!("{} stop strings: at most {MAX_STOP_STRINGS}", stop.len()),
        ));
    }
    let stream = c.stream.unwrap_or(false);
    Ok(GenerationRequest {
        model: c.model,
        input,
        max_tokens: max_tokens.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        sampling: SamplingParams {
            temperature,
            top_k: None,
            top_p: c.top_p.filter(|&p| p < 1.0),
            repetition_penalty: 1.0,
            seed: c.seed.unwrap_or(0),
        },
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        stream,
        include_usage: stream && c.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of turn, or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// The assistant's message in a chat completion.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<()>,
    pub finish_reason: FinishReason,
}

/// The response of a non-streamed chat completion.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

/// The delta of a streamed chat chunk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<()>,
    pub finish_reason: Option<FinishReason>,
}

/// One server-sent event of a streamed chat completion.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only on the last chunk, and only with `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<()>,
    pub finish_reason: Option<FinishReason>,
}

/// The response of `/v1/completions`, and each chunk of its stream (`object: text_completion`).
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub id: String,
    /// `model`.
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Longest prompt + completion, in tokens.
    pub max_model_len: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_with_defaults() {
        let r = parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(r.input, Input::Chat(vec![Message::new("user", "hi")]));
        assert_eq!(r.sampling.temperature, 1.0);
        assert_eq!(r.max_tokens, None);
        assert!(!r.stream);
    }

    #[test]
    fn stop_is_a_string_or_a_list_and_parts_are_joined() {
        let r = parse_chat(
            br#"{"model":"m","stop":"x","messages":[{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.stop, vec!["x".to_string()]);
        assert_eq!(r.input, Input::Chat(vec![Message::new("system", "ab")]));
        let r = parse_completion(br#"{"model":"m","prompt":"p","stop":["a","b"],"stream":true}"#).unwrap();
        assert_eq!(r.stop.len(), 2);
        assert!(r.stream);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse_chat(br#"{"model":"m","temperature":"hot","messages":[]}"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.param.as_deref(), Some("temperature"), "{e}");
        let e = parse_chat(br#"{"model":"m","messages":[{"role":"user","content":5}]}"#).unwrap_err();
        assert!(
            e.param.as_deref().unwrap_or("").starts_with("messages[0]"),
            "{e:?}"
        );
    }

    #[test]
    fn bad_bodies_are_400_with_a_reason() {
        for (body, needle) in [
            (&b"{nope"[..], "not valid JSON"),
            (&b""[..], "empty"),
            (&b"{\"model\": \"\xff\"}"[..], "UTF-8"),
            (
                &br#"{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}"#[..],
                "n = 2",
            ),
            (
                &br#"{"model":"m","temperature":3,"messages":[{"role":"user","content":"x"}]}"#[..],
                "[0, 2]",
            ),
            (
                &br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#[..],
                "unknown role",
            ),
            (&br#"{"messages":[{"role":"user","content":"x"}]}"#[..], "model"),
        ] {
            let e = parse_chat(body).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
    }
}
