//! The endpoint of a process: the manifest's `endpoint.url` (any OpenAI-compatible server, the
//! key read from the variable `api_key_env` names), or — without a URL — `caramba serve` started
//! inside this process on a free localhost port over `endpoint.model` (default smollm2-135m),
//! stopped when the [`Endpoint`] is dropped.

use std::time::Duration;

use super::client::ChatClient;
use super::error::AgentError;
use super::target::{BudgetSpec, DEFAULT_MODEL, EndpointSpec};
use crate::infer::CacheConfig;
use crate::serve::{BackgroundServer, Limits, ServeConfig, ServedModel, spawn};

/// A connected endpoint (and the server it started, if it started one).
pub struct Endpoint {
    pub client: ChatClient,
    /// What it is, for logs and `summary.json`: the URL and model, and whether it was started here.
    pub describe: String,
    _server: Option<BackgroundServer>,
}

/// Connect to `spec.url`, or start a server; requests may ask for up to `budget.max_tokens_per_call`.
pub fn open(spec: &EndpointSpec, budget: &BudgetSpec) -> Result<Endpoint, AgentError> {
    match &spec.url {
        Some(url) => connect(spec, url),
        None => start(spec, budget),
    }
}

fn connect(spec: &EndpointSpec, url: &str) -> Result<Endpoint, AgentError> {
    let key = match &spec.api_key_env {
        None => None,
        Some(var) => Some(std::env::var(var).map_err(|_| AgentError::Unreachable {
            url: url.to_string(),
            message: format!("`endpoint.api_key_env` names ${var}, which is not set"),
        })?),
    };
    let model = match &spec.model {
        Some(m) => m.clone(),
        None => {
            let timeout = Duration::from_secs_f64(spec.timeout_s.min(60.0));
            let models = ChatClient::list_models(url, key.as_deref(), timeout)?;
            models.into_iter().next().ok_or_else(|| AgentError::Protocol {
                url: format!("{}/models", url.trim_end_matches('/')),
                message: "it lists no model; name one in `endpoint.model`".into(),
            })?
        }
    };
    Ok(Endpoint {
        describe: format!("{url} (model {model})"),
        client: ChatClient::new(url, &model, key),
        _server: None,
    })
}

fn start(spec: &EndpointSpec, budget: &BudgetSpec) -> Result<Endpoint, AgentError> {
    let model = spec.model.clone().unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let fail = |message: String| AgentError::Serve {
        model: model.clone(),
        message,
    };
    let device = crate::device::parse_device(&spec.device).map_err(|e| fail(e.to_string()))?;
    let dtype = crate::device::resolve_dtype("auto", &device).map_err(|e| fail(e.to_string()))?;
    let opts = crate::loader::LoadOptions {
        device,
        dtype,
        ..crate::loader::LoadOptions::default()
    };
    let loaded = crate::loader::load(&model, &opts).map_err(|e| fail(e.to_string()))?;
    let served = ServedModel {
        name: model.clone(),
        loaded,
        cache: CacheConfig::default(),
        draft: None,
    };
    let cfg = ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        api_key: None,
        limits: Limits {
            max_tokens: budget.max_tokens_per_call.max(Limits::default().max_tokens),
            ..Limits::default()
        },
    };
    let server = spawn(served, cfg).map_err(|e| fail(e.to_string()))?;
    let url = format!("{}/v1", server.url());
    tracing::info!("started caramba serve for `{model}` at {url}");
    Ok(Endpoint {
        describe: format!("{url} (model {model}, caramba serve started in-process)"),
        client: ChatClient::new(&url, &model, None),
        _server: Some(server),
    })
}
