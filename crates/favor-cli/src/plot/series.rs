//! What a figure shows: series, panels, and the figure's size.

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

/// Width of one panel in [`render_png`](super::render_png)'s default size, in pixels.
pub const PANEL_WIDTH: u32 = 640;
/// Height of a figure in [`render_png`](super::render_png)'s default size, in pixels.
pub const FIGURE_HEIGHT: u32 = 480;
/// The widest figure [`default_size`] asks for, however many panels.
pub const MAX_DEFAULT_WIDTH: u32 = 3840;
/// Smallest width or height [`render_png_with_size`](super::render_png_with_size) draws; smaller requests are raised.
pub const MIN_SIDE: u32 = 64;
/// Largest width or height [`render_png_with_size`](super::render_png_with_size) draws; larger requests are lowered
/// (a bound on the memory of the pixel buffer).
pub const MAX_SIDE: u32 = 8192;

/// The figure size [`render_png`](super::render_png) uses for `n_panels` panels: [`PANEL_WIDTH`] per panel,
/// at most [`MAX_DEFAULT_WIDTH`] in all, by [`FIGURE_HEIGHT`].
pub fn default_size(n_panels: usize) -> (u32, u32) {
    let n = u32::try_from(n_panels.max(1)).unwrap_or(u32::MAX);
    (
        PANEL_WIDTH.saturating_mul(n).min(MAX_DEFAULT_WIDTH),
        FIGURE_HEIGHT,
    )
}
