//! Pieces shared by the figures: the palette, font sizes, the legend, the "no data" panel, tick formatting.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::DrawResult;
use super::font::FAMILY;
use super::format;

/// Okabe–Ito colours: distinguishable with the common colour-vision deficiencies, legible on white.
pub(crate) const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Colour of series `i` (the palette repeats after seven series).
pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Font size of figure titles, in pixels.
pub(crate) const TITLE_PX: f64 = 26.0;
/// Font size of panel captions, in pixels.
pub(crate) const CAPTION_PX: f64 = 22.0;
/// Font size of axis descriptions, in pixels.
pub(crate) const AXIS_PX: f64 = 18.0;
/// Font size of tick labels, legend entries and value labels, in pixels.
pub(crate) const LABEL_PX: f64 = 16.0;

/// A text style of `px` pixels anchored at `(h, v)`.
pub(crate) fn text(px: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FAMILY, px).into_font())
        .color(&BLACK)
        .pos(Pos::new(h, v))
}

/// A tick-label formatter for values up to `max`: no decimals from 50, one from 5, else two.
pub(crate) fn tick_format(max: f64) -> impl Fn(&f64) -> String {
    let decimals = if max >= 50.0 {
        0
    } else if max >= 5.0 {
        1
    } else {
        2
    };
    move |v: &f64| format::grouped(*v, decimals)
}

/// Width in pixels a legend needs for `labels` (swatch + longest label), within `[140, max]`.
pub(crate) fn legend_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    labels: &[String],
    max: u32,
) -> u32 {
    let style = text(LABEL_PX, HPos::Left, VPos::Center);
    let widest = labels
        .iter()
        .filter_map(|l| area.estimate_text_size(l, &style).ok())
        .map(|(w, _)| w)
        .max();
    (widest.unwrap_or(0) + 64).clamp(140, max.max(140))
}

/// Draws a legend (title, then one line swatch with a marker and a label per entry) from the top of `area`.
pub(crate) fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    entries: &[(String, RGBColor)],
    top: i32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.draw_text(title, &text(LABEL_PX, HPos::Left, VPos::Center), (8, top))?;
    for (i, (label, color)) in entries.iter().enumerate() {
        let y = top + 28 * (i as i32 + 1);
        area.draw(&PathElement::new(vec![(8, y), (40, y)], color.stroke_width(3)))?;
        area.draw(&Circle::new((24, y), 4, color.filled()))?;
        area.draw_text(label, &text(LABEL_PX, HPos::Left, VPos::Center), (48, y))?;
    }
    Ok(())
}

/// Draws `caption` at the top of `area` and `message` in its middle (a panel without data).
pub(crate) fn draw_empty<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    message: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    area.draw_text(
        caption,
        &text(CAPTION_PX, HPos::Center, VPos::Top),
        (w as i32 / 2, 12),
    )?;
    area.draw_text(
        message,
        &text(AXIS_PX, HPos::Center, VPos::Center),
        (w as i32 / 2, h as i32 / 2),
    )?;
    Ok(())
}

/// `name` cut to `max` characters with a trailing `...` when longer.
pub(crate) fn shorten(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_owned()
    } else {
        let head: String = name.chars().take(max.saturating_sub(3)).collect();
        format!("{head}...")
    }
}
