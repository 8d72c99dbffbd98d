//! `caramba run MANIFEST [--target T | --group T] [--dry-run] [--fresh]`: the flags, resolved into
//! [`RunOptions`] for the experiment runner.

use std::path::PathBuf;

use super::CliError;
use crate::experiment::RunOptions;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Manifest file (.yml, .yaml or .json).
    pub manifest: PathBuf,
    /// Target or entry point to run (`--group`: the original's v1 name). Default:
    /// `entrypoints.default`, else the first target.
    #[arg(long, visible_alias = "group")]
    pub target: Option<String>,
    /// Validate and print the plan without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Ignore existing checkpoints and start every run from step 0.
    #[arg(long)]
    pub fresh: bool,
    /// Root of the run directories.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Override every run's device (`cpu`, `cuda`, `cuda:N`, `metal`).
    #[arg(long)]
    pub device: Option<String>,
}

impl RunArgs {
    pub fn resolve(&self) -> RunOptions {
        RunOptions {
            target: self.target.clone(),
            dry_run: self.dry_run,
            fresh: self.fresh,
            runs_dir: self.runs_dir.clone(),
            device: self.device.clone(),
            ..RunOptions::new(super::legacy::manifest_path(&self.manifest))
        }
    }
}

/// Run `caramba run`.
pub fn run(args: &RunArgs) -> Result<(), CliError> {
    crate::experiment::run(&args.resolve()).map_err(|e| CliError {
        code: e.code,
        report: e.report,
    })
}
