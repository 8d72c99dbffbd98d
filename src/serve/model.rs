//! The served model: [`ServedModel`] (the loaded weights, the resolved KV cache, an optional
//! speculative draft — what the scheduler thread owns) and [`Prompter`], the part the HTTP
//! handlers share: the tokenizer and chat template that turn a request into token ids, and the
//! context check that refuses a request the model cannot hold.

use super::error::{ApiError, ServeError};
use super::limits::Limits;
use super::protocol::{GenerationRequest, Input};
use crate::infer::speculative::{DraftSource, SpeculativeConfig};
use crate::infer::{CacheConfig, ChatTemplate, GenerateConfig};
use crate::loader::{LoadedModel, TextTokenizer};

/// A speculative draft for every request.
pub struct ServedDraft {
    /// What `--draft` said (for the log).
    pub name: String,
    pub source: DraftSource,
    /// The draft model, for [`DraftSource::Model`]; `None` for a self-draft.
    pub model: Option<LoadedModel>,
    pub cfg: SpeculativeConfig,
}

/// Everything the scheduler thread needs to generate.
pub struct ServedModel {
    /// The id clients name in `model` and `GET /v1/models` lists.
    pub name: String,
    pub loaded: LoadedModel,
    /// The KV cache of each request (`auto` already answered).
    pub cache: CacheConfig,
    pub draft: Option<ServedDraft>,
}

/// A request turned into what the model runs.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub prompt: Vec<u32>,
    /// Max tokens, sampling and the end-of-turn ids.
    pub cfg: GenerateConfig,
    pub stop: Vec<String>,
}

/// Text → token ids for the handlers (cheap to share behind an `Arc`).
pub struct Prompter {
    tokenizer: TextTokenizer,
    template: Option<ChatTemplate>,
    /// The served model's id.
    pub name: String,
    /// Longest prompt + completion the model holds.
    pub max_seq_len: usize,
    limits: Limits,
}

impl Prompter {
    /// The prompter of `model`; fails when the model has no tokenizer or its chat template does
    /// not compile (a model without a template serves `/v1/completions` only).
    pub fn new(model: &ServedModel, limits: Limits) -> Result<Self, ServeError> {
        let loaded = &model.loaded;
        let tok = loaded
            .tokenizer
            .clone()
            .ok_or_else(|| ServeError::NoTokenizer(loaded.path.display().to_string()))?;
        let name = |id: Option<u32>| id.and_then(|i| tok.token(i)).unwrap_or_default();
        let template = tok
            .chat_template
            .as_deref()
            .map(|src| {
                ChatTemplate::new(
                    src,
                    &name(tok.bos_token_id),
                    &name(tok.eos_token_ids.first().copied()),
                )
            })
            .transpose()
            .map_err(|e| ServeError::Template(e.0))?;
        Ok(Self {
            tokenizer: tok,
            template,
            name: model.name.clone(),
            max_seq_len: loaded.max_seq_len,
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether chat completions can be served (the model has a chat template).
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Render, tokenize and check `req`: a 404 for another model's name, a 400 for a prompt plus
    /// `max_tokens` beyond the context or `max_tokens` above the server's limit.
    pub fn prepare(&self, req: &GenerationRequest) -> Result<Prepared, ApiError> {
        if req.model != self.name {
            return Err(ApiError::model_not_found(&req.model, &self.name));
        }
        let prompt = match &req.input {
            Input::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "the model `{}` has no chat template: use /v1/completions with a prompt",
                        self.name
                    ))
                    .with_code("no_chat_template")
                })?;
                let text = template
                    .render(messages, true)
                    .map_err(|e| ApiError::invalid_param("messages", e.0))?;
                // why: the template writes the special tokens (bos included) itself.
                self.tokenizer.encode(&text, false)
            }
            Input::Prompt(text) => self.tokenizer.encode(text, true),
        }
        .map_err(|e| ApiError::bad_request(format!("the prompt does not tokenize: {}", e.0)))?;
        if prompt.is_empty() {
            return Err(ApiError::bad_request("the prompt is empty once tokenized"));
        }
        let max_tokens = self.limits.max_tokens;
        let room = self.max_seq_len.saturating_sub(prompt.len());
        let asked = match req.max_tokens {
            Some(m) if m > max_tokens => {
                return Err(ApiError::invalid_param(
                    "max_tokens",
                    format!("max_tokens = {m} is above this server's limit of {max_tokens}"),
                ));
            }
            Some(m) => m,
            None => max_tokens.min(room),
        };
        if asked == 0 || prompt.len() + asked > self.max_seq_len {
            let field = match req.input {
                Input::Chat(_) => "messages",
                Input::Prompt(_) => "prompt",
            };
            return Err(ApiError::invalid_param(
                field,
                format!(
                    "this model's context is {} tokens, but the request needs {} ({} of prompt, {} of completion); shorten the prompt or lower max_tokens",
                    self.max_seq_len,
                    prompt.len() + asked.max(1),
                    prompt.len(),
                    asked.max(1)
                ),
            )
            .with_code("context_length_exceeded"));
        }
        Ok(Prepared {
            prompt,
            cfg: GenerateConfig {
                max_new_tokens: asked,
                sampling: req.sampling.clone(),
                eos_token_ids: self.tokenizer.eos_token_ids.clone(),
            },
            stop: req.stop.clone(),
        })
    }
}
