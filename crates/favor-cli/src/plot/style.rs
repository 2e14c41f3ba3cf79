//! Fonts (the bundled one), text sizes, colours and marker shapes.

use std::sync::OnceLock;

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::{FontFamily, FontStyle, register_font};

/// The family name the bundled font is registered under.
pub(super) const FONT: &str = "favor-dejavu-sans";
pub(super) static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

pub(super) fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // "sans-serif" too: plotters falls back to it for any text style left unset, and
            // an unregistered family is an error with the ab_glyph backend.
            for name in [FONT, "sans-serif"] {
                register_font(name, FontStyle::Normal, FONT_BYTES)
                    .map_err(|_| "the bundled font could not be loaded".to_string())?;
            }
            Ok(())
        })
        .clone()
}

/// plotters' errors can span lines; the caller wants one.
pub(super) fn draw_err(e: impl std::fmt::Display) -> String {
    let msg = format!("drawing failed: {e}");
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn text_style(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(
        FontFamily::Name(FONT),
        size,
        FontStyle::Normal,
    ))
    .color(&BLACK)
}

pub(super) fn text_width(text: &str, size: f64) -> u32 {
    FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Normal)
        .box_size(text)
        .map(|(w, _)| w)
        .unwrap_or((text.chars().count() as f64 * size * 0.6) as u32)
}

pub(super) const TITLE_SIZE: f64 = 20.0;
pub(super) const CAPTION_SIZE: f64 = 16.0;
pub(super) const DESC_SIZE: f64 = 14.0;
pub(super) const TICK_SIZE: f64 = 12.0;
pub(super) const LEGEND_SIZE: f64 = 12.0;

/// matplotlib's "tab10": distinct, and familiar from most benchmark plots.
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];
/// Marker shapes cycle with a different period than the colours, so series stay
/// distinguishable past ten, and in greyscale.
pub(super) const N_SHAPES: usize = 4;

/// Draws the marker of series `index` at each of `at`. Markers are plain plotters elements
/// drawn one by one: composing them (`EmptyElement + ...`) would demand a `'static`
/// backend, which a `BitMapBackend` borrowing a runtime path is not.
pub(super) fn draw_markers<DB, CT>(
    area: &DrawingArea<DB, CT>,
    at: &[CT::From],
    index: usize,
    r: i32,
    color: RGBColor,
) -> Result<(), String>
where
    DB: DrawingBackend,
    CT: CoordTranslate,
    CT::From: Clone,
{
    for p in at.iter().cloned() {
        match index % N_SHAPES {
            0 => area.draw(&Circle::new(p, r, color.filled())),
            1 => area.draw(&TriangleMarker::new(p, r + 1, color.filled())),
            2 => area.draw(&Cross::new(p, r, color.stroke_width(2))),
            // Hollow, and larger so that the hole shows.
            _ => area.draw(&Circle::new(p, r + 2, color.stroke_width(2))),
        }
        .map_err(draw_err)?;
    }
    Ok(())
}
