//! Writing a figure: panels side by side under a title, to a PNG written atomically.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::panel::draw_panel;
use super::series::{MAX_SIDE, MIN_SIDE, Panel, default_size};
use super::style::{DESC_SIZE, TITLE_SIZE, draw_err, ensure_font, text_style};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

pub(super) fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plot".to_string());
    let dir = path.parent().unwrap_or_else(|| Path::new(""));
    dir.join(format!(".{name}.{}.{n}.tmp.png", std::process::id()))
}

pub(super) fn draw_figure(
    file: &Path,
    title: &str,
    panels: &[Panel],
    size: (u32, u32),
) -> Result<(), String> {
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
