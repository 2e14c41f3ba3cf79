//! Line charts as PNG files, pure Rust (plotters' bitmap backend and a bundled TTF font).
//!
//! The font (DejaVu Sans, see `assets/DejaVuSans-LICENSE.txt`) is compiled into the binary
//! and registered with plotters on first use, so rendering needs no system fontconfig or
//! freetype. Log axes are drawn by plotting `log10` of the data on a linear axis with tick
//! positions and labels computed here: plotters' own log axis puts no tick at all on a range
//! narrower than a decade, which is common for benchmark sweeps.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::coord::CoordTranslate;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontFamily, FontStyle, register_font};

/// One line of a chart.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points, drawn in order. Points that cannot be drawn (non-finite, or
    /// non-positive on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
    /// Optional symmetric error bars: `y_err[i]` is the half-height at `points[i]`.
    pub y_err: Option<Vec<f64>>,
    /// Draw dashed (e.g. a reference or baseline line).
    pub dashed: bool,
}

/// One panel (a pair of axes) of a figure.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    /// Title above the axes.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

/// Width of one panel in [`render_png`]'s default size, in pixels.
pub const PANEL_WIDTH: u32 = 640;
/// Height of a figure in [`render_png`]'s default size, in pixels.
pub const FIGURE_HEIGHT: u32 = 480;
/// The widest figure [`default_size`] asks for, however many panels.
pub const MAX_DEFAULT_WIDTH: u32 = 3840;
/// Smallest width or height [`render_png_with_size`] draws; smaller requests are raised.
pub const MIN_SIDE: u32 = 64;
/// Largest width or height [`render_png_with_size`] draws; larger requests are lowered
/// (a bound on the memory of the pixel buffer).
pub const MAX_SIDE: u32 = 8192;

/// The figure size [`render_png`] uses for `n_panels` panels: [`PANEL_WIDTH`] per panel,
/// at most [`MAX_DEFAULT_WIDTH`] in all, by [`FIGURE_HEIGHT`].
pub fn default_size(n_panels: usize) -> (u32, u32) {
    let n = u32::try_from(n_panels.max(1)).unwrap_or(u32::MAX);
    (
        PANEL_WIDTH.saturating_mul(n).min(MAX_DEFAULT_WIDTH),
        FIGURE_HEIGHT,
    )
}

/// Why a figure was not written; each is one line of text (the CLI prefixes the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlotError {
    /// The image file could not be created or put in place (a full disk, a missing
    /// directory): the CLI treats it as any output it cannot write.
    Write(String),
    /// Drawing itself failed (the font, the plotting library).
    Draw(String),
}

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlotError::Write(s) | PlotError::Draw(s) => f.write_str(s),
        }
    }
}

/// Draws `panels` side by side under `title` and writes a PNG to `path`.
pub fn render_png(path: &Path, title: &str, panels: &[Panel]) -> Result<(), PlotError> {
    let (width, height) = default_size(panels.len());
    render_png_with_size(path, title, panels, width, height)
}

/// Like [`render_png`], with the figure's size in pixels (each side clamped to
/// [`MIN_SIDE`]..=[`MAX_SIDE`]).
///
/// The PNG is written to a temporary file beside `path` and renamed over it, so `path`
/// never holds a half-written image, and any file name works (plotters would otherwise
/// pick the encoder from the extension).
pub fn render_png_with_size(
    path: &Path,
    title: &str,
    panels: &[Panel],
    width: u32,
    height: u32,
) -> Result<(), PlotError> {
    ensure_font().map_err(PlotError::Draw)?;
    let size = (
        width.clamp(MIN_SIDE, MAX_SIDE),
        height.clamp(MIN_SIDE, MAX_SIDE),
    );
    let tmp = temp_sibling(path);
    // Creating the file first gives a plain I/O message; plotters' own errors are Debug dumps.
    let unwritable = |e: std::io::Error| PlotError::Write(format!("cannot write the image: {e}"));
    std::fs::File::create(&tmp).map_err(unwritable)?;
    let drawn = catch_unwind(AssertUnwindSafe(|| draw_figure(&tmp, title, panels, size)))
        .unwrap_or_else(|_| Err("the plotting library failed unexpectedly".to_string()))
        .map_err(PlotError::Draw);
    let result = drawn.and_then(|()| std::fs::rename(&tmp, path).map_err(unwritable));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The family name the bundled font is registered under.
const FONT: &str = "favor-dejavu-sans";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn ensure_font() -> Result<(), String> {
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

fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plot".to_string());
    let dir = path.parent().unwrap_or_else(|| Path::new(""));
    dir.join(format!(".{name}.{}.{n}.tmp.png", std::process::id()))
}

/// plotters' errors can span lines; the caller wants one.
fn draw_err(e: impl std::fmt::Display) -> String {
    let msg = format!("drawing failed: {e}");
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn text_style(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(
        FontFamily::Name(FONT),
        size,
        FontStyle::Normal,
    ))
    .color(&BLACK)
}

fn text_width(text: &str, size: f64) -> u32 {
    FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Normal)
        .box_size(text)
        .map(|(w, _)| w)
        .unwrap_or((text.chars().count() as f64 * size * 0.6) as u32)
}

const TITLE_SIZE: f64 = 20.0;
const CAPTION_SIZE: f64 = 16.0;
const DESC_SIZE: f64 = 14.0;
const TICK_SIZE: f64 = 12.0;
const LEGEND_SIZE: f64 = 12.0;

/// matplotlib's "tab10": distinct, and familiar from most benchmark plots.
const PALETTE: [RGBColor; 10] = [
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
const N_SHAPES: usize = 4;

fn draw_figure(file: &Path, title: &str, panels: &[Panel], size: (u32, u32)) -> Result<(), String> {
    let root = BitMapBackend::new(file, size).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let body = if title.trim().is_empty() {
        root.clone()
    } else {
        root.titled(title, text_style(TITLE_SIZE))
            .map_err(draw_err)?
    };
    if panels.is_empty() {
        let (w, h) = body.dim_in_pixel();
        let style = text_style(DESC_SIZE).pos(Pos::new(HPos::Center, VPos::Center));
        body.draw_text("no panels", &style, (w as i32 / 2, h as i32 / 2))
            .map_err(draw_err)?;
    }
    for (area, panel) in body.split_evenly((1, panels.len())).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(draw_err)
}

/// How a data value becomes a position on a (linear) plotters axis.
#[derive(Clone, Copy)]
struct AxisMap {
    log: bool,
}

impl AxisMap {
    fn to_plot(self, v: f64) -> Option<f64> {
        if !v.is_finite() || (self.log && v <= 0.0) {
            None
        } else if self.log {
            Some(v.log10())
        } else {
            Some(v)
        }
    }
}

/// A vertical error bar in plot coordinates; `lo` is `None` when the lower end is not
/// drawable (non-positive on a log axis) and the bar runs to the bottom of the axes.
struct Bar {
    x: f64,
    lo: Option<f64>,
    hi: f64,
}

struct Prepared {
    points: Vec<(f64, f64)>,
    bars: Vec<Bar>,
}

fn prepare(series: &Series, xm: AxisMap, ym: AxisMap) -> Prepared {
    let mut points = Vec::with_capacity(series.points.len());
    let mut bars = Vec::new();
    for (i, &(x, y)) in series.points.iter().enumerate() {
        let (Some(px), Some(py)) = (xm.to_plot(x), ym.to_plot(y)) else {
            continue;
        };
        points.push((px, py));
        let err = series
            .y_err
            .as_ref()
            .and_then(|e| e.get(i))
            .map(|e| e.abs())
            .filter(|e| e.is_finite() && *e > 0.0);
        if let Some(e) = err
            && let Some(hi) = ym.to_plot(y + e)
        {
            bars.push(Bar {
                x: px,
                lo: ym.to_plot(y - e),
                hi,
            });
        }
    }
    Prepared { points, bars }
}

/// Data extent plus a margin; on log axes the plot coordinates are decades, so the margin
/// is multiplicative in data terms.
fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let scale = lo.abs().max(hi.abs());
    let degenerate = if log {
        span <= 1e-9 * scale.max(1.0)
    } else {
        span <= 1e-9 * scale
    };
    let pad = if !degenerate {
        span * 0.05
    } else if log {
        0.5
    } else if scale > 0.0 {
        scale * 0.1
    } else {
        1.0
    };
    let (a, b) = (lo - pad, hi + pad);
    (
        if a.is_finite() { a } else { lo },
        if b.is_finite() { b } else { hi },
    )
}

/// Tick positions (plot coordinates) with their labels, and minor grid positions.
struct Ticks {
    major: Vec<(f64, String)>,
    minor: Vec<f64>,
}

impl Ticks {
    fn none() -> Self {
        Ticks {
            major: Vec::new(),
            minor: Vec::new(),
        }
    }

    fn label(&self, p: f64) -> String {
        self.major
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

/// A 1-2-2.5-5 step giving about `target` intervals over `span`, and how many minor
/// intervals split it.
fn nice_step(span: f64, target: usize) -> Option<(f64, usize)> {
    if !(span.is_finite() && span > 0.0) {
        return None;
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    if !(mag.is_finite() && mag > 0.0) {
        return None;
    }
    let norm = raw / mag;
    let (m, div) = if norm <= 1.0 {
        (1.0, 5)
    } else if norm <= 2.0 {
        (2.0, 4)
    } else if norm <= 2.5 {
        (2.5, 5)
    } else if norm <= 5.0 {
        (5.0, 5)
    } else {
        (10.0, 5)
    };
    Some((m * mag, div))
}

/// Multiples of `step` within `[lo, hi]`; empty when absurdly many.
fn multiples(lo: f64, hi: f64, step: f64, limit: usize) -> Vec<f64> {
    let (first, last) = ((lo / step).ceil(), (hi / step).floor());
    if !(first.is_finite() && last.is_finite()) || last < first || last - first > limit as f64 {
        return Vec::new();
    }
    (first as i64..=last as i64)
        .map(|k| {
            let v = k as f64 * step;
            // k * step can land at 1e-17 instead of 0, which would print as "1e-17".
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect()
}

/// Fewest decimals (up to 15) that write `q` exactly enough.
fn decimals_needed(q: f64) -> usize {
    let q = q.abs();
    (0..=15)
        .find(|&d| {
            let s = q * 10f64.powi(d);
            (s - s.round()).abs() <= 1e-6 * s.max(1.0)
        })
        .map_or(15, |d| d as usize)
}

/// `v` written to the precision of `quantum` (a tick step, or the value itself), in
/// scientific notation (`1.5e-3`) when `sci`.
fn fmt_value(v: f64, quantum: f64, sci: bool) -> String {
    if v == 0.0 || v.abs() < quantum.abs() * 1e-6 {
        return "0".to_string();
    }
    if sci {
        let ev = v.abs().log10().floor();
        let eq = quantum.abs().log10().floor();
        let extra = decimals_needed(quantum.abs() / 10f64.powf(eq));
        let d = (((ev - eq).max(0.0) as usize) + extra).min(15);
        let s = format!("{v:.d$e}");
        match s.split_once('e') {
            Some((mant, exp)) if mant.contains('.') => {
                let mant = mant.trim_end_matches('0').trim_end_matches('.');
                format!("{mant}e{exp}")
            }
            _ => s,
        }
    } else {
        let d = decimals_needed(quantum);
        format!("{v:.d$}")
    }
}

fn wants_sci(values: &[f64]) -> bool {
    let (mut min, mut max) = (f64::INFINITY, 0f64);
    for v in values.iter().map(|v| v.abs()).filter(|v| *v > 0.0) {
        min = min.min(v);
        max = max.max(v);
    }
    max >= 1e5 || min < 1e-3
}

fn linear_ticks(lo: f64, hi: f64, target: usize) -> Ticks {
    let Some((step, div)) = nice_step(hi - lo, target) else {
        return Ticks::none();
    };
    let values = multiples(lo, hi, step, 100);
    let sci = wants_sci(&values);
    let minor_step = step / div as f64;
    let minor = multiples(lo, hi, minor_step, 1000)
        .into_iter()
        .filter(|m| {
            let r = m / step;
            (r - r.round()).abs() > 1e-6
        })
        .collect();
    Ticks {
        major: values
            .iter()
            .map(|&v| (v, fmt_value(v, step, sci)))
            .collect(),
        minor,
    }
}

fn superscript(n: i64) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

/// Ticks for a log axis whose plot coordinates `lo..hi` are decades: powers of ten when the
/// range holds two or more, else 1-2-5 multiples, else plain linear steps (a narrow log
/// range looks linear anyway).
fn log_ticks(lo: f64, hi: f64, target: usize) -> Ticks {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return Ticks::none();
    }
    let in_range = |p: f64| p >= lo - 1e-9 && p <= hi + 1e-9;
    let (e_lo, e_hi) = ((lo - 1e-9).ceil(), (hi + 1e-9).floor());
    let decades = e_hi - e_lo + 1.0;
    if decades >= 2.0 {
        let k = (decades / target.max(1) as f64).ceil().max(1.0) as i64;
        let (e_lo, e_hi) = (e_lo as i64, e_hi as i64);
        let mut major: Vec<i64> = (e_lo..=e_hi).filter(|e| e.rem_euclid(k) == 0).collect();
        if major.len() < 2 {
            major = (e_lo..=e_hi).step_by(k as usize).collect();
        }
        let minor = if k == 1 {
            let mut m = Vec::new();
            for d in (lo.floor() as i64)..=(hi.floor() as i64) {
                for f in 2..=9 {
                    let p = d as f64 + f64::from(f).log10();
                    if in_range(p) {
                        m.push(p);
                    }
                }
            }
            m
        } else {
            (e_lo..=e_hi)
                .filter(|e| !major.contains(e))
                .map(|e| e as f64)
                .collect()
        };
        return Ticks {
            major: major
                .into_iter()
                .map(|e| (e as f64, format!("10{}", superscript(e))))
                .collect(),
            minor,
        };
    }
    let mut major = Vec::new();
    let mut minor = Vec::new();
    for d in (lo.floor() as i64 - 1)..=(hi.ceil() as i64) {
        for f in 1..=9 {
            let p = d as f64 + f64::from(f).log10();
            if !in_range(p) {
                continue;
            }
            if matches!(f, 1 | 2 | 5) {
                major.push((p, f64::from(f) * 10f64.powi(d as i32)));
            } else {
                minor.push(p);
            }
        }
    }
    if major.len() >= 3 {
        let values: Vec<f64> = major.iter().map(|&(_, v)| v).collect();
        let sci = wants_sci(&values);
        return Ticks {
            major: major
                .into_iter()
                .map(|(p, v)| (p, fmt_value(v, v, sci)))
                .collect(),
            minor,
        };
    }
    let (v_lo, v_hi) = (10f64.powf(lo), 10f64.powf(hi));
    let lin = linear_ticks(v_lo, v_hi, target);
    let to_log = |v: f64| (v > 0.0).then(|| v.log10());
    Ticks {
        major: lin
            .major
            .into_iter()
            .filter_map(|(v, s)| to_log(v).map(|p| (p, s)))
            .collect(),
        minor: lin.minor.into_iter().filter_map(to_log).collect(),
    }
}

/// A linear axis whose tick and grid positions are given rather than computed (plotters'
/// `with_key_points` wrapper loses the tick-label formatter of `f64` axes).
struct TickAxis {
    lo: f64,
    hi: f64,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.lo) / (self.hi - self.lo);
        let px = f64::from(limit.0) + t * (f64::from(limit.1) - f64::from(limit.0));
        // Far-off (or NaN, from a degenerate range) positions must not wrap around when cast.
        if px.is_nan() {
            limit.0
        } else {
            px.round().clamp(-1e7, 1e7) as i32
        }
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.major.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn ticks_for(lo: f64, hi: f64, log: bool, target: usize) -> Ticks {
    if log {
        log_ticks(lo, hi, target)
    } else {
        linear_ticks(lo, hi, target)
    }
}

/// Draws the marker of series `index` at each of `at`. Markers are plain plotters elements
/// drawn one by one: composing them (`EmptyElement + ...`) would demand a `'static`
/// backend, which a `BitMapBackend` borrowing a runtime path is not.
fn draw_markers<DB, CT>(
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

#[derive(Clone, Copy, Debug, PartialEq)]
struct Corner {
    right: bool,
    upper: bool,
}

/// Legend layout, in pixels.
const LEGEND_PAD: i32 = 6;
const LEGEND_GLYPH: i32 = 26;
const LEGEND_GAP: i32 = 8;

fn legend_row_height() -> i32 {
    (LEGEND_SIZE * 1.5).round() as i32
}

fn legend_size(labels: &[&str]) -> (i32, i32) {
    let text_w = labels
        .iter()
        .map(|l| text_width(l, LEGEND_SIZE))
        .max()
        .unwrap_or(0);
    let w = 2 * LEGEND_PAD + LEGEND_GLYPH + LEGEND_GAP + i32::try_from(text_w).unwrap_or(1000);
    let rows = i32::try_from(labels.len()).unwrap_or(1000);
    (w, 2 * LEGEND_PAD + rows * legend_row_height())
}

/// Picks the plot corner whose legend box would hide the least data (points weigh more
/// than stretches of line), preferring the upper right; returns it with what it hides.
fn legend_corner(
    prepared: &[Prepared],
    x: (f64, f64),
    y: (f64, f64),
    plot_px: (u32, u32),
    legend_px: (i32, i32),
) -> (Corner, usize) {
    let fx = f64::from(legend_px.0 + LEGEND_PAD) / f64::from(plot_px.0.max(1));
    let fy = f64::from(legend_px.1 + LEGEND_PAD) / f64::from(plot_px.1.max(1));
    let norm = |(px, py): (f64, f64)| ((px - x.0) / (x.1 - x.0), (py - y.0) / (y.1 - y.0));
    let cost = |c: Corner| {
        let inside = |(u, v): (f64, f64)| {
            let in_x = if c.right { u >= 1.0 - fx } else { u <= fx };
            let in_y = if c.upper { v >= 1.0 - fy } else { v <= fy };
            in_x && in_y
        };
        let mut cost = 0usize;
        for p in prepared {
            cost += 4 * p.points.iter().filter(|&&q| inside(norm(q))).count();
            for w in p.points.windows(2) {
                let (a, b) = (norm(w[0]), norm(w[1]));
                cost += (1..10)
                    .filter(|&i| {
                        let t = f64::from(i) / 10.0;
                        inside((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t))
                    })
                    .count();
            }
        }
        cost
    };
    [(true, true), (false, true), (true, false), (false, false)]
        .into_iter()
        .map(|(right, upper)| {
            let c = Corner { right, upper };
            (c, cost(c))
        })
        .min_by_key(|&(_, cost)| cost)
        .unwrap_or((
            Corner {
                right: true,
                upper: true,
            },
            0,
        ))
}

/// Where the legend goes: inside the axes when a corner is free enough, else in a strip
/// right of them (a crowded plot is better narrower than hidden).
#[derive(Clone, Copy, Debug, PartialEq)]
enum LegendPlace {
    Inside(Corner),
    Outside,
}

/// Draws the legend box with its top-left corner at `(x0, y0)` of `area` (pixels).
/// Drawn by hand rather than with plotters' series labels, whose glyph closures need
/// composed elements (see [`draw_markers`]).
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(usize, &Series)],
    (x0, y0): (i32, i32),
) -> Result<(), String> {
    let labels: Vec<&str> = entries.iter().map(|(_, s)| s.label.as_str()).collect();
    let (w, h) = legend_size(&labels);
    let bg = WHITE.mix(0.92);
    area.draw(&Rectangle::new([(x0, y0), (x0 + w, y0 + h)], bg.filled()))
        .map_err(draw_err)?;
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + w, y0 + h)],
        BLACK.mix(0.35).stroke_width(1),
    ))
    .map_err(draw_err)?;
    let row_h = legend_row_height();
    let style = text_style(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    for (row, &(index, series)) in (0i32..).zip(entries) {
        let color = PALETTE[index % PALETTE.len()];
        let cy = y0 + LEGEND_PAD + row * row_h + row_h / 2;
        let (gx0, gx1) = (x0 + LEGEND_PAD, x0 + LEGEND_PAD + LEGEND_GLYPH);
        let line = color.stroke_width(2);
        if series.dashed {
            area.draw(&DashedPathElement::new(
                vec![(gx0, cy), (gx1, cy)],
                7,
                4,
                line,
            ))
        } else {
            area.draw(&PathElement::new(vec![(gx0, cy), (gx1, cy)], line))
        }
        .map_err(draw_err)?;
        draw_markers(area, &[((gx0 + gx1) / 2, cy)], index, 3, color)?;
        area.draw(&Text::new(
            series.label.as_str(),
            (gx1 + LEGEND_GAP, cy),
            style.clone(),
        ))
        .map_err(draw_err)?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), String> {
    let xm = AxisMap { log: panel.log_x };
    let ym = AxisMap { log: panel.log_y };
    let prepared: Vec<Prepared> = panel.series.iter().map(|s| prepare(s, xm, ym)).collect();
    let any_point = prepared.iter().any(|p| !p.points.is_empty());

    let x_range = padded_range(
        prepared.iter().flat_map(|p| p.points.iter().map(|q| q.0)),
        xm.log,
    );
    let y_values = prepared.iter().flat_map(|p| {
        let bar_ends = p.bars.iter().flat_map(|b| {
            // A lower end far below its point (an error as large as the value, on a log
            // axis) would stretch the axis over empty decades: such a bar is cut at the
            // bottom of the axes instead.
            let lo = b.lo.filter(|&lo| !ym.log || lo >= b.hi - 3.0);
            [Some(b.hi), lo].into_iter().flatten()
        });
        p.points.iter().map(|q| q.1).chain(bar_ends)
    });
    let y_range = padded_range(y_values, ym.log);

    let entries: Vec<(usize, &Series)> = panel
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.label.is_empty())
        .collect();
    let labels: Vec<&str> = entries.iter().map(|(_, s)| s.label.as_str()).collect();
    let legend_px = legend_size(&labels);

    let (area_w, area_h) = area.dim_in_pixel();
    let has_title = !panel.title.trim().is_empty();
    let caption_h = if has_title {
        CAPTION_SIZE as u32 + 14
    } else {
        0
    };
    let x_area = TICK_SIZE as u32
        + 12
        + if panel.x_label.is_empty() {
            0
        } else {
            DESC_SIZE as u32 + 6
        };
    let plot_h = area_h.saturating_sub(x_area + caption_h + 16).max(20);
    let y_ticks = ticks_for(
        y_range.0,
        y_range.1,
        ym.log,
        (plot_h / 50).clamp(2, 10) as usize,
    );
    let y_tick_w = y_ticks
        .major
        .iter()
        .map(|(_, s)| text_width(s, TICK_SIZE))
        .max()
        .unwrap_or(0);
    let desc_h = if panel.y_label.is_empty() {
        0
    } else {
        DESC_SIZE as u32 + 8
    };
    let y_area = (y_tick_w + 14 + desc_h).min(area_w / 3);
    const MARGIN: u32 = 8;
    const MARGIN_RIGHT: u32 = 18;
    let plot_w = area_w
        .saturating_sub(y_area + MARGIN + MARGIN_RIGHT)
        .max(20);

    let outside_w = u32::try_from(legend_px.0 + 2 * LEGEND_PAD).unwrap_or(u32::MAX);
    let place = if entries.is_empty() {
        None
    } else {
        let (corner, hidden) =
            legend_corner(&prepared, x_range, y_range, (plot_w, plot_h), legend_px);
        // A point costs 4: a few stretches of line under the legend are tolerable.
        Some(if hidden >= 4 && outside_w.saturating_mul(3) <= plot_w {
            LegendPlace::Outside
        } else {
            LegendPlace::Inside(corner)
        })
    };
    let margin_right = if place == Some(LegendPlace::Outside) {
        outside_w + MARGIN
    } else {
        MARGIN_RIGHT
    };
    let plot_w = area_w
        .saturating_sub(y_area + MARGIN + margin_right)
        .max(20);
    let x_ticks = ticks_for(
        x_range.0,
        x_range.1,
        xm.log,
        (plot_w / 90).clamp(2, 10) as usize,
    );

    let mut builder = ChartBuilder::on(area);
    builder
        .margin(MARGIN)
        .margin_right(margin_right)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area);
    if has_title {
        builder.caption(&panel.title, text_style(CAPTION_SIZE));
    }
    let axis = |(lo, hi): (f64, f64), ticks: &Ticks| TickAxis {
        lo,
        hi,
        major: ticks.major.iter().map(|t| t.0).collect(),
        minor: ticks.minor.clone(),
    };
    let mut chart = builder
        .build_cartesian_2d(axis(x_range, &x_ticks), axis(y_range, &y_ticks))
        .map_err(draw_err)?;

    let fmt_x = |p: &f64| x_ticks.label(*p);
    let fmt_y = |p: &f64| y_ticks.label(*p);
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&fmt_y)
        .label_style(text_style(TICK_SIZE))
        .axis_desc_style(text_style(DESC_SIZE))
        .axis_style(BLACK.mix(0.8))
        .bold_line_style(BLACK.mix(0.14))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(draw_err)?;

    let plot = chart.plotting_area();
    let plot_px = plot.dim_in_pixel();
    // Error-bar caps are 4 px either side, in plot units.
    let cap = 4.0 * (x_range.1 - x_range.0) / f64::from(plot_px.0.max(1));
    for (i, (series, prep)) in panel.series.iter().zip(&prepared).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let bar_style = color.mix(0.85).stroke_width(1);
        let bottom = y_range.0;
        for b in &prep.bars {
            let lo = b.lo.map_or(bottom, |lo| lo.max(bottom));
            plot.draw(&PathElement::new(vec![(b.x, lo), (b.x, b.hi)], bar_style))
                .map_err(draw_err)?;
            let mut caps = vec![b.hi];
            // No cap where the bar was cut at the axes: it does not end there.
            if b.lo.is_some_and(|l| l >= bottom) {
                caps.push(lo);
            }
            for y in caps {
                plot.draw(&PathElement::new(
                    vec![(b.x - cap, y), (b.x + cap, y)],
                    bar_style,
                ))
                .map_err(draw_err)?;
            }
        }

        let line = color.stroke_width(2);
        if series.dashed {
            plot.draw(&DashedPathElement::new(prep.points.clone(), 8, 5, line))
        } else {
            plot.draw(&PathElement::new(prep.points.clone(), line))
        }
        .map_err(draw_err)?;

        let radius = if prep.points.len() > 60 { 2 } else { 3 };
        draw_markers(plot, &prep.points, i, radius, color)?;
    }

    if !any_point {
        let msg = if panel.series.is_empty() {
            "no data"
        } else {
            "no drawable points"
        };
        let at = ((x_range.0 + x_range.1) / 2.0, (y_range.0 + y_range.1) / 2.0);
        let grey = BLACK.mix(0.6);
        let style = text_style(DESC_SIZE)
            .color(&grey)
            .pos(Pos::new(HPos::Center, VPos::Center));
        plot.draw(&Text::new(msg, at, style)).map_err(draw_err)?;
    }

    match place {
        Some(LegendPlace::Inside(corner)) => {
            let (pw, ph) = plot_px;
            let (pw, ph) = (
                i32::try_from(pw).unwrap_or(i32::MAX),
                i32::try_from(ph).unwrap_or(i32::MAX),
            );
            let x0 = if corner.right {
                (pw - legend_px.0 - LEGEND_PAD).max(0)
            } else {
                LEGEND_PAD
            };
            let y0 = if corner.upper {
                LEGEND_PAD
            } else {
                (ph - legend_px.1 - LEGEND_PAD).max(0)
            };
            draw_legend(&plot.strip_coord_spec(), &entries, (x0, y0))?;
        }
        Some(LegendPlace::Outside) => {
            let (px, py) = plot.get_base_pixel();
            let (ax, ay) = area.get_base_pixel();
            let x0 = px - ax + i32::try_from(plot_px.0).unwrap_or(0) + LEGEND_PAD + 4;
            draw_legend(area, &entries, (x0, py - ay))?;
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_png(tag: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!(
            "favor-plot-test-{tag}-{}-{n}.png",
            std::process::id()
        ))
    }

    fn check_png(path: &Path, min_len: usize) {
        let bytes = std::fs::read(path).expect("read png");
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG signature"
        );
        assert!(
            bytes.len() >= min_len,
            "PNG suspiciously small: {} bytes",
            bytes.len()
        );
        assert!(bytes.len() < 20_000_000, "PNG suspiciously large");
    }

    fn sample_panels() -> Vec<Panel> {
        let ns: [f64; 6] = [256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0];
        let mk = |k: usize, scale: f64, log_x: bool| -> Vec<Series> {
            (0..k)
                .map(|s| {
                    let points: Vec<(f64, f64)> = ns
                        .iter()
                        .map(|&n| {
                            let y = scale * (s as f64 + 1.0) * n.powf(1.0 + 0.1 * s as f64) * 1e-6;
                            (if log_x { n } else { n / 1000.0 }, y)
                        })
                        .collect();
                    let y_err = Some(points.iter().map(|p| p.1 * 0.2).collect());
                    Series {
                        label: format!("series {s} (m={})", 16 << s),
                        points,
                        y_err,
                        dashed: s == 7,
                    }
                })
                .collect()
        };
        vec![
            Panel {
                title: "time vs length".into(),
                x_label: "sequence length n".into(),
                y_label: "time [s]".into(),
                log_x: true,
                log_y: true,
                series: mk(8, 1.0, true),
            },
            Panel {
                title: "relative error".into(),
                x_label: "sequence length n".into(),
                y_label: "error".into(),
                log_x: true,
                log_y: true,
                series: mk(8, 1e-4, true),
            },
            Panel {
                title: "linear axes".into(),
                x_label: "n / 1000".into(),
                y_label: "memory [MiB]".into(),
                log_x: false,
                log_y: false,
                series: mk(8, 10.0, false),
            },
        ]
    }

    #[test]
    fn renders_three_log_log_panels() {
        let path = temp_png("three");
        render_png(&path, "FAVOR+ sample figure", &sample_panels()).expect("render");
        check_png(&path, 20_000);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn renders_empty_panels_and_no_panels() {
        let path = temp_png("empty");
        let panels = [
            Panel {
                title: "nothing".into(),
                log_y: true,
                ..Panel::default()
            },
            Panel {
                title: "no points".into(),
                series: vec![Series {
                    label: "empty".into(),
                    ..Series::default()
                }],
                ..Panel::default()
            },
        ];
        render_png(&path, "", &panels).expect("render empty panels");
        check_png(&path, 1_000);
        render_png(&path, "no panels at all", &[]).expect("render no panels");
        check_png(&path, 500);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_points_on_log_axes_do_not_panic() {
        let path = temp_png("bad");
        let series = vec![
            Series {
                label: "mixed".into(),
                points: vec![
                    (f64::NAN, 1.0),
                    (-1.0, 2.0),
                    (0.0, 3.0),
                    (1.0, -4.0),
                    (2.0, f64::INFINITY),
                    (3.0, 0.5),
                    (4.0, 0.25),
                ],
                y_err: Some(vec![1.0, f64::NAN, -1.0, 2.0, 1.0, 10.0, 0.1]),
                dashed: false,
            },
            Series {
                label: "all bad".into(),
                points: vec![(f64::NAN, f64::NAN), (-1.0, -1.0)],
                y_err: Some(vec![]),
                dashed: true,
            },
            Series {
                label: "single".into(),
                points: vec![(5.0, 5.0)],
                y_err: None,
                dashed: true,
            },
        ];
        let panels = [
            Panel {
                title: "log-log".into(),
                log_x: true,
                log_y: true,
                series: series.clone(),
                ..Panel::default()
            },
            Panel {
                title: "all invalid".into(),
                log_x: true,
                log_y: true,
                series: vec![series[1].clone()],
                ..Panel::default()
            },
            Panel {
                title: "extremes".into(),
                series: vec![Series {
                    label: "huge".into(),
                    points: vec![(-f64::MAX, f64::MAX), (f64::MAX, -f64::MAX), (0.0, 1e-300)],
                    y_err: Some(vec![f64::MAX, f64::MAX, 1e-300]),
                    dashed: false,
                }],
                ..Panel::default()
            },
        ];
        render_png(&path, "bad points", &panels).expect("render bad points");
        check_png(&path, 1_000);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = temp_png("no-such-dir");
        let path = dir.join("sub").join("figure.png");
        let err = render_png(&path, "t", &sample_panels()).expect_err("must fail");
        assert!(matches!(err, PlotError::Write(_)), "{err:?}");
        let err = err.to_string();
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(!err.is_empty());
        assert!(!path.exists());
    }

    #[test]
    fn tick_labels() {
        assert_eq!(fmt_value(0.30000000000000004, 0.1, false), "0.3");
        assert_eq!(fmt_value(1500.0, 500.0, false), "1500");
        assert_eq!(fmt_value(1.5e6, 5e5, true), "1.5e6");
        assert_eq!(fmt_value(2e-4, 2e-4, true), "2e-4");
        assert_eq!(superscript(-3), "⁻³");
        let t = log_ticks(-3.2, 0.1, 6);
        let labels: Vec<&str> = t.major.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(labels, ["10⁻³", "10⁻²", "10⁻¹", "10⁰"]);
        // Narrower than two decades: 1-2-5 steps rather than a single power of ten.
        let t = log_ticks(230f64.log10(), 9000f64.log10(), 6);
        let labels: Vec<&str> = t.major.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(labels, ["500", "1000", "2000", "5000"]);
        // Narrow: linear steps.
        let t = log_ticks(2f64.log10(), 3f64.log10(), 5);
        assert!(t.major.len() >= 3, "{:?}", t.major);
    }
}
