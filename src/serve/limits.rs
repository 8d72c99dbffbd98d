//! What one client may ask of the server: [`Limits`] (body size, `max_tokens`, queue length,
//! timeouts) and the `Authorization: Bearer KEY` check of `--api-key`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The server's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes (→ 413). Default: 1 MiB.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for; also the default when it asks for none (then
    /// capped by the context). Default: 1024.
    pub max_tokens: usize,
    /// Requests that may wait for the model while one runs (→ 503 beyond). Default: 64.
    pub queue: usize,
    /// Time a client has to send its request headers (slow-loris guard). Default: 10 s.
    pub header_timeout: Duration,
    /// Time a client has to send its request body once the headers are in (→ 408). Default: 30 s.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_tokens: 1024,
            queue: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The key `Authorization: Bearer` must carry; `None`: no check.
#[derive(Clone)]
pub struct ApiKey(pub Option<String>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // why: a key must not end up in a log line.
        f.write_str(if self.0.is_some() {
            "ApiKey(set)"
        } else {
            "ApiKey(none)"
        })
    }
}

impl ApiKey {
    /// Whether the `Authorization` header value `given` carries the key.
    pub fn accepts(&self, given: Option<&[u8]>) -> bool {
        let Some(key) = &self.0 else { return true };
        let Some(token) = given.and_then(|v| v.strip_prefix(b"Bearer ".as_slice())) else {
            return false;
        };
        constant_time_eq(token.trim_ascii(), key.as_bytes())
    }
}

/// Byte equality whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: 401 in OpenAI's shape unless the request carries the key.
pub async fn require_key(State(key): State<ApiKey>, req: Request, next: Next) -> Response {
    let given = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if key.accepts(given) {
        return next.run(req).await;
    }
    let message = if given.is_none() {
        "missing `Authorization: Bearer <key>` header: this server was started with --api-key"
    } else {
        "incorrect API key in the `Authorization` header"
    };
    ApiError::unauthorized(message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_key_check() {
        let key = ApiKey(Some("sekrit".into()));
        assert!(key.accepts(Some(b"Bearer sekrit")));
        assert!(!key.accepts(Some(b"Bearer sekri")));
        assert!(!key.accepts(Some(b"sekrit")));
        assert!(!key.accepts(None));
        assert!(ApiKey(None).accepts(None));
    }
}
