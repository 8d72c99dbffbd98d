//! `report.json`: the [`Report`] as given, plus its computed `summary` and an `artifacts` section that says
//! what was written (files, figure format, font). `serde_json::from_str::<Report>` reads it back (the two
//! computed sections are ignored there).

use serde::{Deserialize, Serialize};

use super::ArtifactError;
use super::figure::FigureFormat;
use crate::bench::{Report, Summary};

/// What [`super::write_all`] produced; stored in `report.json` under `"artifacts"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactInfo {
    /// File names written, relative to the artifact directory, `report.json` last.
    pub files: Vec<String>,
    /// Format of the figures.
    pub figure_format: FigureFormat,
    /// Font file the PNG figures were drawn with; `None` for SVG.
    pub font: Option<String>,
    /// Why the figures are SVG (no system font found, or SVG requested); `None` for PNG.
    pub figure_note: Option<String>,
}

#[derive(Serialize)]
struct ReportDocument<'a> {
    #[serde(flatten)]
    report: &'a Report,
    summary: Summary,
    artifacts: &'a ArtifactInfo,
}

/// Pretty-printed `report.json` bytes (with a trailing newline).
pub(crate) fn report_json(report: &Report, info: &ArtifactInfo) -> Result<Vec<u8>, ArtifactError> {
    let document = ReportDocument {
        report,
        summary: report.summary(),
        artifacts: info,
    };
    let mut bytes = serde_json::to_vec_pretty(&document).map_err(|source| ArtifactError::Json {
        path: "report.json".into(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}
