//! The one log line a fused kernel writes when it hands a call to its candle-ops path: once per
//! kernel and reason, so that a training run says which shapes or dtypes took the slow path
//! without repeating it every step.

use std::collections::HashSet;
use std::sync::Mutex;

/// Log "`kernel`: `path` for `reason`" the first time this pair is seen in the process.
pub fn log_once(kernel: &str, path: &str, reason: &str) {
    static SEEN: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);
    let Ok(mut seen) = SEEN.lock() else { return };
    if seen
        .get_or_insert_with(HashSet::new)
        .insert((kernel.to_string(), reason.to_string()))
    {
        tracing::info!("{kernel}: {path} for {reason}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pair_is_logged_once_and_other_pairs_still_are() {
        // Exercises the set; the log line itself goes to whatever subscriber the test has.
        super::log_once("test kernel", "candle ops", "a reason");
        super::log_once("test kernel", "candle ops", "a reason");
        super::log_once("test kernel", "candle ops", "another reason");
        super::log_once("other kernel", "candle ops", "a reason");
    }
}
