//! `caramba prepare`: text files (or a Debian package's files) → a `.npy` token file; or a known
//! public dataset (`--dataset sklearn-digits`) → its features and labels as `.npy`.

use std::path::PathBuf;

use super::CliError;
use crate::data::{DataError, PrepareSpec, Tokenizer, prepare};

/// `caramba prepare --tokenizer bytes --input 'docs/**/*.txt' --output data/corpus.npy`
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// `bytes` (vocab 256) or the path of an HF tokenizer.json.
    #[arg(long, default_value = "bytes")]
    pub tokenizer: String,
    /// Glob of text files (repeatable; `**` allowed). With --debian-package, relative globs are
    /// matched inside the unpacked package.
    #[arg(long = "input", required_unless_present = "dataset")]
    pub inputs: Vec<String>,
    /// Instead of text: fetch a known dataset and write `<output>/features.npy` and
    /// `<output>/labels.npy` (`sklearn-digits`: scikit-learn's 8×8 digits from its PyPI wheel).
    #[arg(long, value_parser = ["sklearn-digits"], conflicts_with_all = ["inputs", "debian_package"])]
    pub dataset: Option<String>,
    /// Download this Debian package (`apt-get download`) into the cache and read files from it.
    #[arg(long)]
    pub debian_package: Option<String>,
    /// The token file to write (uint16 when the vocabulary fits, else int32); with --dataset, the
    /// directory of the arrays.
    #[arg(long)]
    pub output: PathBuf,
    /// Do not put the tokenizer's end-of-text id between documents.
    #[arg(long)]
    pub no_separators: bool,
}

/// Run `caramba prepare`; prints the summary on stdout.
pub fn run(args: &PrepareArgs) -> Result<(), CliError> {
    let to_cli = |e: DataError| {
        if e.is_usage() {
            CliError::usage(e)
        } else {
            CliError::failed(e)
        }
    };
    if args.dataset.is_some() {
        let (features, labels) = (args.output.join("features.npy"), args.output.join("labels.npy"));
        let rows = crate::data::digits::write_npy(&features, &labels).map_err(to_cli)?;
        println!(
            "{rows} rows: {} (float32, {rows}×{}), {} (int64); source {} (SHA-256 {})",
            features.display(),
            crate::data::digits::PIXELS,
            labels.display(),
            crate::data::digits::WHEEL_MEMBER,
            crate::data::digits::SHA256
        );
        return Ok(());
    }
    let tokenizer = Tokenizer::from_name(&args.tokenizer).map_err(to_cli)?;
    let spec = PrepareSpec {
        input: args.inputs.clone(),
        debian_package: args.debian_package.clone(),
        tokenizer: Some(args.tokenizer.clone()),
        separate_documents: !args.no_separators,
    };
    let summary = prepare(&spec, &tokenizer, &args.output).map_err(to_cli)?;
    // why: the record beside the token file says where its text came from; reports that use the
    // file (perplexity sets, training data) read it, as they do for files a run prepared itself.
    crate::data::prepare::write_source_record(&spec, &summary).map_err(to_cli)?;
    println!("{summary}");
    Ok(())
}
