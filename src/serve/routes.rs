//! The HTTP routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `GET /health`, and OpenAI-shaped 404/405 for anything else. A generation handler reads the body
//! (size limit → 413, timeout → 408), parses and tokenizes it on a blocking task, queues a job and
//! answers either with one JSON object or with server-sent events (`data: {chunk}` … `data: [DONE]`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::limits::{ApiKey, require_key};
use super::model::Prompter;
use super::protocol::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChunkChoice, Completion,
    CompletionChoice, Delta, FinishReason, GenerationRequest, ModelCard, ModelList, Usage, parse_chat,
    parse_completion,
};
use super::scheduler::{Event, Job, Scheduler};

/// Which generation endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

/// What every handler shares.
pub struct App {
    prompter: Arc<Prompter>,
    scheduler: Scheduler,
    /// Unix seconds the server started (`created` of the model card).
    started: u64,
    /// Distinguishes this server's response ids from another run's.
    instance: u32,
    next_id: AtomicU64,
}

impl App {
    pub fn new(prompter: Prompter, scheduler: Scheduler) -> Self {
        Self {
            prompter: Arc::new(prompter),
            scheduler,
            started: unix_now(),
            instance: rand::random(),
            next_id: AtomicU64::new(1),
        }
    }

    fn id(&self, endpoint: Endpoint) -> String {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:08x}{n:08}", self.instance)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The router over `app`; `key` guards the `/v1` routes.
pub fn router(app: Arc<App>, key: ApiKey) -> Router {
    let body_limit = app.prompter.limits().max_body_bytes;
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(axum::middleware::from_fn_with_state(key, require_key));
    Router::new()
        .route("/health", get(health))
        .merge(v1)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

async fn models(State(app): State<Arc<App>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: app.prompter.name.clone(),
            object: "model",
            created: app.started,
            owned_by: "caramba",
            max_model_len: app.prompter.max_seq_len,
        }],
    })
}

async fn chat(State(app): State<Arc<App>>, req: Request) -> Response {
    generate(app, req, Endpoint::Chat).await
}

async fn completions(State(app): State<Arc<App>>, req: Request) -> Response {
    generate(app, req, Endpoint::Completion).await
}

/// Read, check and queue a generation request; answer it whole or as a stream.
async fn generate(app: Arc<App>, req: Request, endpoint: Endpoint) -> Response {
    let received = Instant::now();
    let id = app.id(endpoint);
    match submit(&app, req, endpoint, &id, received).await {
        Ok((greq, rx)) => {
            let w = ChunkWriter {
                endpoint,
                id,
                created: unix_now(),
                model: app.prompter.name.clone(),
            };
            if greq.stream {
                stream(w, rx, greq.include_usage).into_response()
            } else {
                whole(w, rx).await
            }
        }
        Err(e) => {
            tracing::info!(
                "{id}: refused in {:.0} ms: {} {}",
                received.elapsed().as_secs_f64() * 1e3,
                e.status.as_u16(),
                e.message
            );
            e.into_response()
        }
    }
}

/// The body read, parsed, tokenized and queued; the job's event channel.
async fn submit(
    app: &App,
    req: Request,
    endpoint: Endpoint,
    id: &str,
    received: Instant,
) -> Result<(GenerationRequest, mpsc::UnboundedReceiver<Event>), ApiError> {
    let limits = app.prompter.limits().clone();
    let body = match tokio::time::timeout(limits.body_timeout, Bytes::from_request(req, &())).await {
        Err(_) => return Err(ApiError::body_timeout(limits.body_timeout.as_secs())),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::too_large(limits.max_body_bytes));
        }
        Ok(Err(rejection)) => return Err(ApiError::bad_request(rejection.body_text())),
        Ok(Ok(body)) => body,
    };
    let prompter = app.prompter.clone();
    // why: tokenizing a long prompt takes milliseconds; keep it off the async workers.
    let (greq, prepared) = tokio::task::spawn_blocking(move || {
        let greq = match endpoint {
            Endpoint::Chat => parse_chat(&body)?,
            Endpoint::Completion => parse_completion(&body)?,
        };
        let prepared = prompter.prepare(&greq)?;
        Ok::<_, ApiError>((greq, prepared))
    })
    .await
    .map_err(|_| ApiError::internal("preparing the request failed"))??;
    let (tx, rx) = mpsc::unbounded_channel();
    app.scheduler.submit(Job {
        id: id.to_string(),
        prepared,
        events: tx,
        received,
    })?;
    Ok((greq, rx))
}

/// Wait for the whole text; one JSON response.
async fn whole(w: ChunkWriter, mut rx: mpsc::UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish_reason, usage } => return w.whole(text, finish_reason, usage),
            Event::Failed(message) => return ApiError::internal(message).into_response(),
        }
    }
    ApiError::internal("the model thread stopped").into_response()
}

/// Server-sent events: one chunk per text delta, a last chunk with `finish_reason`, the usage
/// chunk when asked for, then `[DONE]`. An error after the stream began is sent as an event with
/// OpenAI's error object (the status is already 200 by then).
fn stream(
    w: ChunkWriter,
    rx: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let mut pending = VecDeque::new();
    if let Some(first) = w.opening() {
        pending.push_back(first);
    }
    let state = (rx, w, pending, false);
    let events = futures_util::stream::unfold(state, move |(mut rx, w, mut pending, mut ended)| async move {
        loop {
            if let Some(data) = pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), (rx, w, pending, ended)));
            }
            if ended {
                return None;
            }
            match rx.recv().await {
                Some(Event::Text(t)) => pending.push_back(w.text(t)),
                Some(Event::Done { finish_reason, usage }) => {
                    pending.push_back(w.finish(finish_reason));
                    if include_usage {
                        pending.push_back(w.usage(usage));
                    }
                    pending.push_back("[DONE]".to_string());
                    ended = true;
                }
                Some(Event::Failed(message)) => {
                    pending.push_back(error_json(&ApiError::internal(message)));
                    pending.push_back("[DONE]".to_string());
                    ended = true;
                }
                None => {
                    pending.push_back(error_json(&ApiError::internal("the model thread stopped")));
                    pending.push_back("[DONE]".to_string());
                    ended = true;
                }
            }
        }
    });
    Sse::new(events)
}

fn error_json(e: &ApiError) -> String {
    serde_json::to_string(&e.body()).unwrap_or_default()
}

/// Builds the responses and chunks of one request.
struct ChunkWriter {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
}

impl ChunkWriter {
    fn json(value: &impl serde::Serialize) -> String {
        // why: these types hold only strings and numbers; serializing them cannot fail.
        serde_json::to_string(value).expect("a response serializes")
    }

    fn chat_chunk(&self, delta: Delta, finish_reason: Option<FinishReason>, usage: Option<Usage>) -> String {
        let choices = match usage {
            Some(_) => Vec::new(),
            None => vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
        };
        Self::json(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }

    fn completion(
        &self,
        text: String,
        finish_reason: Option<FinishReason>,
        usage: Option<Usage>,
        last: bool,
    ) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices: if usage.is_some() && !last {
                Vec::new()
            } else {
                vec![CompletionChoice {
                    index: 0,
                    text,
                    logprobs: None,
                    finish_reason,
                }]
            },
            usage,
        }
    }

    /// The first chunk of a chat stream (the assistant's role); none for completions.
    fn opening(&self) -> Option<String> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.chat_chunk(
                Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                },
                None,
                None,
            )
        })
    }

    fn text(&self, text: String) -> String {
        match self.endpoint {
            Endpoint::Chat => self.chat_chunk(
                Delta {
                    role: None,
                    content: Some(text),
                },
                None,
                None,
            ),
            Endpoint::Completion => Self::json(&self.completion(text, None, None, false)),
        }
    }

    fn finish(&self, reason: FinishReason) -> String {
        match self.endpoint {
            Endpoint::Chat => self.chat_chunk(Delta::default(), Some(reason), None),
            Endpoint::Completion => Self::json(&self.completion(String::new(), Some(reason), None, false)),
        }
    }

    fn usage(&self, usage: Usage) -> String {
        match self.endpoint {
            Endpoint::Chat => self.chat_chunk(Delta::default(), None, Some(usage)),
            Endpoint::Completion => Self::json(&self.completion(String::new(), None, Some(usage), false)),
        }
    }

    fn whole(self, text: String, finish_reason: FinishReason, usage: Usage) -> Response {
        match self.endpoint {
            Endpoint::Chat => Json(ChatCompletion {
                id: self.id,
                object: "chat.completion",
                created: self.created,
                model: self.model,
                choices: vec![ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: text,
                    },
                    logprobs: None,
                    finish_reason,
                }],
                usage,
            })
            .into_response(),
            Endpoint::Completion => {
                Json(self.completion(text, Some(finish_reason), Some(usage), true)).into_response()
            }
        }
    }
}
