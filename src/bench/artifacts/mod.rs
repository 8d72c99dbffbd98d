//! Publication-ready artifacts of a benchmark [`Report`](crate::bench::Report): `report.json`, one CSV per
//! result table, a booktabs `tables.tex`, three figures (PNG with a system font, else SVG) and a
//! self-contained `report.html`. [`write_all`] writes them all, atomically. Formats: `docs/benchmarking.md`.

mod axis;
mod bundle;
mod chart_kit;
pub mod classifier_figures;
mod context_plots;
mod csv_tables;
mod error;
mod figure;
mod font;
mod format;
mod html;
mod latex;
mod line_figure;
mod report_json;
mod summary_plot;

pub use bundle::{ArtifactOptions, write_all, write_all_with};
pub use error::ArtifactError;
pub use figure::FigureFormat;
pub use latex::{escape_latex, latex_tables};
pub use report_json::ArtifactInfo;
