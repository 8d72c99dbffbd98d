//! The original caramba's command lines without a subcommand, mapped onto `caramba run`:
//!
//! ```text
//! caramba MANIFEST [--target T | --group T] [--dry-run]          # the late original
//! caramba --manifest M --mode train|sample|chat [--exp E] [--data D]
//!         [--ckpt C] [--resume R] [--seed N] [--entity X --project Y]   # its legacy mode
//! ```
//!
//! `--mode sample|chat` makes every run of the target sample from (or chat with) its trained
//! model, `--ckpt` names another model; `--exp` picks the runs labelled `exp:` in the manifest;
//! `--data` and `--seed` override the manifest. caramba resumes every run from the newest
//! checkpoint in its run directory by itself, so `--resume` only checks that it names one there.
//! There is no W&B: `--entity` and `--project` are accepted with a warning. The original's preset
//! paths (`caramba/config/presets/X.yml`, `config/presets/X.yml`) find `presets/X.yml`.

use std::path::{Path, PathBuf};

use super::CliError;
use crate::experiment::RunOptions;
use crate::manifest::RunMode;

/// `--mode` of the original's legacy command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LegacyMode {
    /// Train the runs (the default).
    Train,
    /// Load each run's trained model (or `--ckpt`) and continue its `generate.prompt`.
    Sample,
    /// Load each run's trained model (or `--ckpt`) and talk with it on stdin.
    Chat,
}

/// Arguments given without a subcommand.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct LegacyArgs {
    /// A manifest to run without a subcommand: `caramba M.yml --target quick` is `caramba run
    /// M.yml --target quick`.
    #[arg(value_name = "MANIFEST")]
    pub manifest_arg: Option<PathBuf>,
    /// The manifest (the original's legacy-mode spelling of the argument above).
    #[arg(long = "manifest", value_name = "PATH", conflicts_with = "manifest_arg")]
    pub manifest: Option<PathBuf>,
    /// Target or entry point to run (`--group`: the v1 name).
    #[arg(long, visible_alias = "group", value_name = "NAME")]
    pub target: Option<String>,
    /// Validate and print the plan without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// train (default), sample or chat: what every run of the target does.
    #[arg(long, value_enum)]
    pub mode: Option<LegacyMode>,
    /// Only the runs labelled `exp: NAME` in the manifest (the original's experiment presets
    /// baseline, gqa, bottleneck, decoupled are manifests here).
    #[arg(long, value_name = "NAME")]
    pub exp: Option<String>,
    /// Train on this token file instead of the target's `data.path`.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// With --mode sample|chat: the model to load (any model source). Default: the run's own.
    #[arg(long, value_name = "MODEL")]
    pub ckpt: Option<String>,
    /// A checkpoint to resume from; caramba resumes from the newest one in each run directory
    /// by itself, so this must name one inside the runs directory (`runs/`).
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
    /// Override every run's seed.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// W&B entity of the original: accepted and ignored (caramba has no W&B).
    #[arg(long, value_name = "NAME")]
    pub entity: Option<String>,
    /// W&B project of the original: accepted and ignored (caramba has no W&B).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
}

/// Run what the arguments without a subcommand ask for.
pub fn run(args: &LegacyArgs) -> Result<(), CliError> {
    let opts = resolve(args)?;
    crate::experiment::run(&opts).map_err(|e| CliError {
        code: e.code,
        report: e.report,
    })
}

/// The `caramba run` these arguments mean (warnings for what is accepted and ignored).
pub fn resolve(args: &LegacyArgs) -> Result<RunOptions, CliError> {
    let Some(manifest) = args.manifest_arg.as_ref().or(args.manifest.as_ref()) else {
        return Err(CliError::usage(miette::miette!(
            help = "write the model as a manifest and pass it: `caramba --manifest presets/standard_transformer.yml --mode train` \
                    (or `caramba run MANIFEST`); see `caramba --help`",
            "no manifest: the original's legacy mode built a model from `--exp` alone; caramba needs a manifest"
        )));
    };
    if args.entity.is_some() || args.project.is_some() {
        tracing::warn!(
            "--entity/--project are ignored: caramba has no W&B; metrics are in runs/<name>/<target>/<run>/metrics.jsonl"
        );
    }
    let runs_dir = PathBuf::from("runs");
    if let Some(resume) = &args.resume {
        check_resume(resume, &runs_dir)?;
    }
    let mode = args.mode.map(|m| match m {
        LegacyMode::Train => RunMode::Train,
        LegacyMode::Sample => RunMode::Sample,
        LegacyMode::Chat => RunMode::Chat,
    });
    if args.ckpt.is_some() && mode.is_none_or(|m| m.is_train()) {
        return Err(CliError::usage(miette::miette!(
            help = "add `--mode sample` or `--mode chat`; a training run resumes from its own checkpoints",
            "--ckpt names the model to sample from or chat with"
        )));
    }
    Ok(RunOptions {
        target: args.target.clone(),
        dry_run: args.dry_run,
        seed: args.seed,
        data: args.data.clone(),
        exp: args.exp.clone(),
        mode,
        ckpt: args.ckpt.clone(),
        runs_dir,
        ..RunOptions::new(manifest_path(manifest))
    })
}

/// `--resume PATH`: accepted when it lies in the runs directory (which caramba resumes from).
fn check_resume(resume: &Path, runs_dir: &Path) -> Result<(), CliError> {
    let inside = match (std::fs::canonicalize(resume), std::fs::canonicalize(runs_dir)) {
        (Ok(r), Ok(root)) => r.starts_with(root),
        _ => false,
    };
    if inside {
        tracing::info!(
            "--resume {}: each run resumes from the newest checkpoint in its run directory",
            resume.display()
        );
        Ok(())
    } else {
        Err(CliError::usage(miette::miette!(
            help = "leave --resume out: each run resumes from the newest checkpoint in runs/<name>/<target>/<run>/ \
                    (`--fresh` with `caramba run` starts over)",
            "--resume {}: not a checkpoint in {}/",
            resume.display(),
            runs_dir.display()
        )))
    }
}

/// `path`, or `presets/X.yml` for the original's preset paths (`caramba/config/presets/X.yml`,
/// `config/presets/X.yml`) when `path` does not exist and the preset does.
pub fn manifest_path(path: &Path) -> PathBuf {
    if path.exists() {
        return path.to_path_buf();
    }
    let s = path.to_string_lossy();
    if s.contains("config/presets/")
        && let Some(name) = path.file_name()
    {
        let preset = Path::new("presets").join(name);
        if preset.exists() {
            tracing::info!(
                "{}: reading {} (the original's preset path)",
                path.display(),
                preset.display()
            );
            return preset;
        }
    }
    path.to_path_buf()
}
