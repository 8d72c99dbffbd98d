//! `caramba compile MANIFEST [--print-plan] [--json]`: parse, lower and validate without
//! building anything. Success prints `ok: N targets, M runs` (or the plan); a bad manifest
//! prints every problem and exits with code 2.

use std::path::PathBuf;

use super::CliError;
use crate::compiler::{compile, render_plan};

/// Arguments of `caramba compile`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompileArgs {
    /// The manifest (.yml, .yaml or .json).
    pub manifest: PathBuf,
    /// Print the lowered model tree and the ordered plan.
    #[arg(long)]
    pub print_plan: bool,
    /// Machine-readable output on stdout: the plan, or `{"ok": false, "problems": [...]}`.
    #[arg(long)]
    pub json: bool,
}

/// Run `caramba compile`.
pub fn run(args: &CompileArgs) -> Result<(), CliError> {
    match compile(&super::legacy::manifest_path(&args.manifest)) {
        Ok(c) => {
            if args.json {
                println!("{}", c.plan_json());
            } else if args.print_plan {
                print!("{}", render_plan(&c));
            } else {
                let targets = c.plan.targets.len();
                let runs = c.plan.run_count();
                println!(
                    "ok: {targets} target{}, {runs} run{}",
                    if targets == 1 { "" } else { "s" },
                    if runs == 1 { "" } else { "s" }
                );
            }
            Ok(())
        }
        Err(err) => {
            if args.json {
                let report = serde_json::json!({
                    "ok": false,
                    "error": err.to_string(),
                    "problems": err.problems(),
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("plain data serializes")
                );
            }
            Err(CliError::usage(err))
        }
    }
}
