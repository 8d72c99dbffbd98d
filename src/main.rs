//! The `caramba` binary: parse arguments, run one command, map its outcome to an exit code
//! (0 ok, 1 a run failed, 2 bad manifest or usage, 130 interrupted).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    caramba::host_allocator::keep_freed_memory_for_reuse();
    let cli = caramba::cli::Cli::parse();
    caramba::console::init(cli.verbose, cli.quiet);
    match caramba::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{:?}", err.report);
            if format!("{:?}", err.report).contains("OUT_OF_MEMORY") {
                // The driver's name for it says nothing about what to change.
                eprintln!(
                    "the GPU ran out of memory: lower the batch size or the context, use --dtype bf16, or pick a larger GPU; checkpoints already written are intact"
                );
            }
            ExitCode::from(err.code)
        }
    }
}
