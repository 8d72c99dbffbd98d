//! `caramba serve`: the model behind OpenAI's HTTP protocol. The model, cache and draft flags are
//! `generate`'s (`ModelArgs`, `CacheArgs`, `--draft`/`--spec-k`); the server's own flags resolve
//! into a [`ServeConfig`], the loaded model into a [`ServedModel`], and `serve::Server` runs
//! until Ctrl-C.

use super::cache::{CacheArgs, resolve_auto};
use super::generate::SpecArgs;
use super::model::{ModelArgs, load_model, tokenizer};
use super::{CliError, failed};
use crate::infer::speculative::DraftSource;
use crate::serve::{Limits, ServeConfig, ServedDraft, ServedModel, Server};

/// `caramba serve`: OpenAI-compatible HTTP endpoints (`/v1/chat/completions`, `/v1/completions`,
/// `/v1/models`, `/health`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every /v1 request (else 401). Default: no key;
    /// also read from CARAMBA_API_KEY.
    #[arg(long, env = "CARAMBA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model id clients name in `model` (default: the --model value as given).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Requests that may wait while one is generated; more are answered 503.
    #[arg(long, default_value_t = Limits::default().queue)]
    pub queue: usize,
    /// Largest `max_tokens` a request may ask for (also the default when it asks for none).
    #[arg(long, default_value_t = Limits::default().max_tokens)]
    pub max_tokens_limit: usize,
    /// Largest request body in bytes (else 413).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
}

impl ServeArgs {
    /// The server's address and limits.
    fn config(&self) -> Result<ServeConfig, CliError> {
        if self.max_tokens_limit == 0 {
            return Err(CliError::usage(miette::miette!(
                "--max-tokens-limit 0: must be at least 1"
            )));
        }
        if self.queue == 0 {
            return Err(CliError::usage(miette::miette!("--queue 0: must be at least 1")));
        }
        Ok(ServeConfig {
            host: self.host.clone(),
            port: self.port,
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_tokens: self.max_tokens_limit,
                queue: self.queue,
                ..Limits::default()
            },
        })
    }
}

/// Run `caramba serve` until Ctrl-C or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<(), CliError> {
    let load = args.model.resolve()?;
    let cache = args.cache.resolve();
    let draft = args.spec.resolve()?;
    let cfg = args.config()?;
    let loaded = load_model(&args.model.model, &load)?;
    tokenizer(&loaded)?;
    let cache = resolve_auto(&cache, &loaded)?;
    let draft = match draft {
        None => None,
        Some((name, source, spec_cfg)) => {
            let model = match &source {
                DraftSource::SelfLayers(_) => None,
                DraftSource::Model(src) => Some(load_model(src, &load)?),
            };
            Some(ServedDraft {
                name,
                source,
                model,
                cfg: spec_cfg,
            })
        }
    };
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.model.model.clone());
    let describe = format!(
        "{name} ({}) on {} as {}, KV cache {}{}",
        loaded.path.display(),
        crate::device::describe(&loaded.device),
        crate::device::dtype_name(loaded.dtype),
        cache.label().replace("none (full forward)", "plain"),
        draft
            .as_ref()
            .map(|d| format!(", draft {}", d.name))
            .unwrap_or_default(),
    );
    let model = ServedModel {
        name,
        loaded,
        cache,
        draft,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    runtime.block_on(async move {
        let server = Server::bind(model, cfg.clone()).await.map_err(CliError::usage)?;
        let addr = server.local_addr();
        tracing::info!("serving {describe}");
        tracing::info!(
            "listening on http://{addr}/v1 (max_tokens ≤ {}, queue {}, body ≤ {} bytes{})",
            cfg.limits.max_tokens,
            cfg.limits.queue,
            cfg.limits.max_body_bytes,
            if cfg.api_key.is_some() {
                ", API key required"
            } else {
                ""
            }
        );
        // why: on stdout, so that a script that started the server with --port 0 reads the URL.
        super::emit(&mut std::io::stdout(), &format!("http://{addr}/v1\n"))?;
        server
            .run(async {
                stop_signal().await;
                tracing::info!("stopping");
            })
            .await
            .map_err(failed)
    })
}

/// Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `kill` and service managers send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
