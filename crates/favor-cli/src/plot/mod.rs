//! Line charts as PNG files, pure Rust (plotters' bitmap backend and a bundled TTF font).
//!
//! The font (DejaVu Sans, see `assets/DejaVuSans-LICENSE.txt`) is compiled into the binary
//! and registered with plotters on first use, so rendering needs no system fontconfig or
//! freetype. Log axes are drawn by plotting `log10` of the data on a linear axis with tick
//! positions and labels computed here: plotters' own log axis puts no tick at all on a range
//! narrower than a decade, which is common for benchmark sweeps.

// In dependency order: each module uses only those above it. Public (and hidden from the
// docs) for the unit tests in tests/unit/; the API is what this module re-exports.
#[doc(hidden)]
pub mod data;
#[doc(hidden)]
pub mod legend;
#[doc(hidden)]
pub mod panel;
#[doc(hidden)]
pub mod render;
#[doc(hidden)]
pub mod series;
#[doc(hidden)]
pub mod style;
#[doc(hidden)]
pub mod ticks;

pub use render::{PlotError, render_png, render_png_with_size};
pub use series::{
    FIGURE_HEIGHT, MAX_DEFAULT_WIDTH, MAX_SIDE, MIN_SIDE, PANEL_WIDTH, Panel, Series, default_size,
};
