//! The `caramba` binary: parse arguments, run one command, map its outcome to an exit code
//! (0 ok, 1 a run failed, 2 bad manifest or usage, 130 interrupted).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = caramba::cli::Cli::parse();
    caramba::console::init(cli.verbose, cli.quiet);
    match caramba::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{:?}", err.report);
            ExitCode::from(err.code)
        }
    }
}
