//! Binding and running: [`Server::bind`] starts the model thread and listens; [`Server::run`]
//! accepts connections until a shutdown signal, serving each over hyper's HTTP/1 with a header
//! read timeout (axum's own `serve` cannot set one); [`spawn`] runs a server on a runtime of its
//! own thread (tests, embedding).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::error::ServeError;
use super::limits::{ApiKey, Limits};
use super::model::{Prompter, ServedModel};
use super::routes::{App, router};
use super::scheduler::Scheduler;

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Host name or address to listen on. Default: 127.0.0.1 (this machine only).
    pub host: String,
    /// Default: 8080; 0 picks a free port.
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on `/v1` routes. Default: none.
    pub api_key: Option<String>,
    pub limits: Limits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            limits: Limits::default(),
        }
    }
}

/// A bound server, not yet accepting.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    addr: SocketAddr,
    limits: Limits,
}

impl Server {
    /// Start the model thread over `model` and listen on `cfg.host:cfg.port`.
    pub async fn bind(model: ServedModel, cfg: ServeConfig) -> Result<Self, ServeError> {
        let prompter = Prompter::new(&model, cfg.limits.clone())?;
        let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|source| ServeError::Bind {
                addr: format!("{}:{}", cfg.host, cfg.port),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: format!("{}:{}", cfg.host, cfg.port),
            source,
        })?;
        let (scheduler, _thread) = Scheduler::start(model, cfg.limits.queue)?;
        let app = Arc::new(App::new(prompter, scheduler));
        Ok(Self {
            listener,
            router: router(app, ApiKey(cfg.api_key)),
            addr,
            limits: cfg.limits,
        })
    }

    /// The address it listens on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accept connections until `shutdown` completes; connections still open are then dropped.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .keep_alive(true);
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // why: e.g. out of file descriptors; waiting lets connections close.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let service = TowerToHyperService::new(self.router.clone());
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
        Ok(())
    }
}

/// A server running on its own thread and runtime; dropping it stops accepting.
pub struct BackgroundServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bind (on the calling thread, so a bind error comes back here) and serve on a new thread.
pub fn spawn(model: ServedModel, cfg: ServeConfig) -> Result<BackgroundServer, ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let server = runtime.block_on(Server::bind(model, cfg))?;
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("caramba-serve".into())
        .spawn(move || {
            let run = server.run(async {
                let _ = stopped.await;
            });
            if let Err(e) = runtime.block_on(run) {
                tracing::error!("server stopped: {e}");
            }
        })
        .map_err(ServeError::Thread)?;
    Ok(BackgroundServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
