//! [`write_all`]: every artifact of a report, each file written atomically, `report.json` last (its presence
//! means the set is complete).

use std::path::{Path, PathBuf};

use super::ArtifactError;
use super::context_plots::{latency_vs_context, memory_scaling};
use super::csv_tables::csv_files;
use super::figure::{FigureFormat, render};
use super::font::figure_font;
use super::html::{Embedded, report_html};
use super::latex::latex_tables;
use super::report_json::{ArtifactInfo, report_json};
use super::summary_plot::SummaryPlot;
use crate::bench::Report;
use crate::record::write_atomic;

/// Options of [`write_all_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactOptions {
    /// Figure format. Default (`None`): PNG when a system font is found, else SVG. `Some(Png)` fails with
    /// [`ArtifactError::NoFont`] when no font exists; `Some(Svg)` never needs one.
    pub figures: Option<FigureFormat>,
}

/// `(format, font, note)` of the figures: what was asked for, else PNG when a font exists, else SVG.
fn figure_choice(
    requested: Option<FigureFormat>,
    font: Result<&Path, &[String]>,
) -> Result<(FigureFormat, Option<String>, Option<String>), ArtifactError> {
    match (requested, font) {
        (Some(FigureFormat::Svg), _) => Ok((FigureFormat::Svg, None, Some("SVG requested".to_owned()))),
        (Some(FigureFormat::Png) | None, Ok(path)) => {
            Ok((FigureFormat::Png, Some(path.display().to_string()), None))
        }
        (Some(FigureFormat::Png), Err(searched)) => Err(ArtifactError::NoFont {
            searched: searched.to_vec(),
        }),
        (None, Err(searched)) => {
            let note = format!(
                "no TrueType/OpenType font found (searched {})",
                searched.join(", ")
            );
            Ok((FigureFormat::Svg, None, Some(note)))
        }
    }
}

/// Writes every artifact of `report` into `dir` (created if missing) with the default options and returns
/// the paths written: `perplexity.csv`, `latency.csv`, `memory.csv`, `accuracy.csv`, `tables.tex`,
/// `summary.{png|svg}`, `latency_vs_context.{png|svg}`, `memory_scaling.{png|svg}`, `report.html`,
/// `report.json`.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, ArtifactError> {
    write_all_with(report, dir, &ArtifactOptions::default())
}

/// [`write_all`] with explicit [`ArtifactOptions`].
pub fn write_all_with(
    report: &Report,
    dir: &Path,
    options: &ArtifactOptions,
) -> Result<Vec<PathBuf>, ArtifactError> {
    let fields = report.non_finite_fields();
    if !fields.is_empty() {
        return Err(ArtifactError::NonFinite { fields });
    }
    std::fs::create_dir_all(dir).map_err(|source| ArtifactError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let (figure_format, font, figure_note) = figure_choice(options.figures, figure_font())?;
    let ext = figure_format.extension();

    let plot_error = |stem: &str, message: String| ArtifactError::Plot {
        path: dir.join(format!("{stem}.{ext}")),
        message,
    };
    let summary = render(&SummaryPlot::new(report), figure_format).map_err(|m| plot_error("summary", m))?;
    let latency = render(&latency_vs_context(report), figure_format)
        .map_err(|m| plot_error("latency_vs_context", m))?;
    let memory =
        render(&memory_scaling(report), figure_format).map_err(|m| plot_error("memory_scaling", m))?;
    let figures = [
        Embedded {
            stem: "summary",
            caption: "Teacher/student summary",
            bytes: &summary,
        },
        Embedded {
            stem: "latency_vs_context",
            caption: "Decode throughput vs prompt length",
            bytes: &latency,
        },
        Embedded {
            stem: "memory_scaling",
            caption: "KV-cache size vs sequence length",
            bytes: &memory,
        },
    ];

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, bytes) in csv_files(report).map_err(|e| e.in_dir(dir))? {
        files.push((name.to_owned(), bytes));
    }
    files.push(("tables.tex".to_owned(), latex_tables(report).into_bytes()));
    for fig in &figures {
        files.push((format!("{}.{ext}", fig.stem), fig.bytes.to_vec()));
    }
    let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    names.extend(["report.html".to_owned(), "report.json".to_owned()]);
    let info = ArtifactInfo {
        files: names,
        figure_format,
        font,
        figure_note,
    };
    files.push((
        "report.html".to_owned(),
        report_html(report, &info, &figures).into_bytes(),
    ));
    files.push((
        "report.json".to_owned(),
        report_json(report, &info).map_err(|e| e.in_dir(dir))?,
    ));

    let mut written = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        let path = dir.join(name);
        write_atomic(&path, &bytes).map_err(|e| ArtifactError::Io {
            path: path.clone(),
            source: e.into_io(),
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_font_figures_fall_back_to_svg_unless_png_is_demanded() {
        let searched = vec!["/usr/share/fonts".to_owned()];
        let (format, font, note) = figure_choice(None, Err(&searched)).expect("fallback");
        assert_eq!((format, font), (FigureFormat::Svg, None));
        assert!(note.expect("a note").contains("/usr/share/fonts"));
        let err = figure_choice(Some(FigureFormat::Png), Err(&searched)).expect_err("PNG needs a font");
        assert!(matches!(err, ArtifactError::NoFont { .. }));
        assert!(err.to_string().contains("CARAMBA_FONT"), "{err}");
        let font = Path::new("/fonts/Sans.ttf");
        let (format, used, note) = figure_choice(None, Ok(font)).expect("png");
        assert_eq!(
            (format, used.as_deref(), note),
            (FigureFormat::Png, Some("/fonts/Sans.ttf"), None)
        );
        let (format, ..) = figure_choice(Some(FigureFormat::Svg), Ok(font)).expect("svg");
        assert_eq!(format, FigureFormat::Svg);
    }
}
