//! tracing subscriber + indicatif progress bars that live together (bars never clobber log lines;
//! hidden when stderr is not a terminal), and the sparklines of the live loss plot.

pub mod sparkline;

use indicatif::ProgressStyle;
use tracing_indicatif::IndicatifLayer;
use tracing_indicatif::span_ext::IndicatifSpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Install the global subscriber: `-v` debug, `-vv` trace, `-q` warnings only; `RUST_LOG` wins.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("caramba={level},warn")));
    let indicatif = IndicatifLayer::new();
    let writer = indicatif.get_stderr_writer();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(writer).with_target(false).compact())
        .with(indicatif)
        .try_init();
}

/// A progress bar over `total` steps, drawn by the tracing-indicatif layer so that log lines
/// print above it; invisible when stderr is not a terminal.
pub struct Progress {
    span: tracing::Span,
}

impl Progress {
    pub fn new(total: u64, what: &str) -> Self {
        let span = tracing::info_span!("progress", task = what);
        span.pb_set_style(
            &ProgressStyle::with_template(
                "{span_fields} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg} ({elapsed} < {eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        span.pb_set_length(total);
        span.pb_start();
        Self { span }
    }

    pub fn set_position(&self, pos: u64) {
        self.span.pb_set_position(pos);
    }

    pub fn inc(&self, n: u64) {
        self.span.pb_inc(n);
    }

    pub fn set_message(&self, msg: &str) {
        self.span.pb_set_message(msg);
    }
}

/// A line of text drawn by the tracing-indicatif layer below the bars started before it (the live
/// loss plot under the training bar); invisible when stderr is not a terminal, and gone when
/// dropped.
pub struct LiveLine {
    span: tracing::Span,
}

impl LiveLine {
    pub fn new(what: &str) -> Self {
        let span = tracing::info_span!("live", plot = what);
        span.pb_set_style(&ProgressStyle::with_template("{wide_msg}").expect("static template"));
        span.pb_start();
        Self { span }
    }

    /// Replace the line's text.
    pub fn set(&self, text: &str) {
        self.span.pb_set_message(text);
    }
}
