//! Rendering a figure to PNG (bitmap backend, text drawn with the system font of [`super::font`]) or to SVG
//! (no font needed: the text stays text, and its width is estimated for layout), through one drawing code
//! path per figure that is generic over the plotters backend.

use std::error::Error;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind};
use serde::{Deserialize, Serialize};

/// Image format of the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FigureFormat {
    /// Raster PNG; needs a TrueType/OpenType font on the system.
    Png,
    /// Vector SVG; needs no font file (the viewer draws the text).
    Svg,
}

impl FigureFormat {
    /// File extension without the dot (`"png"`, `"svg"`).
    pub fn extension(self) -> &'static str {
        match self {
            FigureFormat::Png => "png",
            FigureFormat::Svg => "svg",
        }
    }

    /// MIME type (`"image/png"`, `"image/svg+xml"`).
    pub fn mime(self) -> &'static str {
        match self {
            FigureFormat::Png => "image/png",
            FigureFormat::Svg => "image/svg+xml",
        }
    }
}

/// Result of drawing on a backend.
pub(crate) type DrawResult = Result<(), Box<dyn Error>>;

/// A figure that can draw itself on any plotters backend.
pub(crate) trait Plot {
    /// Canvas size in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the whole figure on `root` (already filled white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Draws `plot` and returns the encoded file bytes.
pub(crate) fn render<P: Plot>(plot: &P, format: FigureFormat) -> Result<Vec<u8>, String> {
    let (w, h) = plot.size();
    match format {
        FigureFormat::Png => {
            let mut rgb = vec![255u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
                draw_on(plot, &root)?;
            }
            encode_png(&rgb, w, h).map_err(|e| format!("PNG encoding failed: {e}"))
        }
        FigureFormat::Svg => {
            let mut svg = String::new();
            {
                let root = EstimatedText(SVGBackend::with_string(&mut svg, (w, h))).into_drawing_area();
                draw_on(plot, &root)?;
            }
            Ok(svg.into_bytes())
        }
    }
}

fn draw_on<P: Plot, DB: DrawingBackend>(plot: &P, root: &DrawingArea<DB, Shift>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    plot.draw(root).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// A backend that forwards everything to `B` but estimates text extents without a font
/// (average glyph advance 0.55 em, height 1 em), so that charts can be laid out for SVG when no font exists.
pub(crate) struct EstimatedText<B>(pub B);

impl<B: DrawingBackend> DrawingBackend for EstimatedText<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(
        &mut self,
        p: BackendCoord,
        c: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(p, c)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_text(text, style, pos)
    }
    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let size = style.size();
        let width = 0.55 * size * text.chars().count() as f64;
        Ok((width.ceil() as u32, size.ceil() as u32))
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }
}
