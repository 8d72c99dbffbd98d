//! Errors of the quantized KV cache: bad kind names, inconsistent specs, mismatched shapes.

use super::kind::CacheKind;

/// Everything the cache can reject. Converts into `candle_core::Error` (its message kept) so that
/// `?` works inside tensor code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// A kind name that is not one of [`CacheKind::ALL`].
    #[error("unknown KV cache kind `{given}`; valid kinds: {}", valid_names())]
    UnknownKind { given: String },
    /// A cache spec field that cannot work (zero heads, zero-width segment, …).
    #[error("invalid KV cache spec: {field}: {message}")]
    InvalidSpec { field: &'static str, message: String },
    /// A tensor whose shape does not match the cache (`what` names the argument).
    #[error("{what}: expected shape {expected}, found {found:?}")]
    Shape {
        what: &'static str,
        expected: String,
        found: Vec<usize>,
    },
    /// `truncate(requested)` past the cached length.
    #[error("cannot truncate a KV cache of {len} positions to {requested}")]
    TruncateBeyondLen { requested: usize, len: usize },
    /// `truncate(requested)` of a recurrent state further back than the positions it keeps.
    #[error(
        "cannot roll a recurrent state of {len} positions back to {requested}: it keeps the states of its last {window} positions only"
    )]
    RecurrentRollback {
        requested: usize,
        len: usize,
        window: usize,
    },
    /// A causal attention call with more new queries than cached positions.
    #[error("{t} queries cannot attend causally over {len} cached positions")]
    QueriesBeyondCache { t: usize, len: usize },
    /// Query heads that cannot be grouped over the KV heads.
    #[error("{n_heads} query heads cannot share {n_kv_heads} KV heads")]
    HeadGrouping { n_heads: usize, n_kv_heads: usize },
}

fn valid_names() -> String {
    CacheKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<CacheError> for candle_core::Error {
    fn from(err: CacheError) -> Self {
        candle_core::Error::wrap(err)
    }
}
