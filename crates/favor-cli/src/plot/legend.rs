//! The legend: its size, the corner that hides the least data, and its box.

use super::data::Prepared;
use super::series::Series;
use super::style::{LEGEND_SIZE, PALETTE, draw_err, draw_markers, text_style, text_width};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Corner {
    pub(super) right: bool,
    pub(super) upper: bool,
}

/// Legend layout, in pixels.
pub(super) const LEGEND_PAD: i32 = 6;
pub(super) const LEGEND_GLYPH: i32 = 26;
pub(super) const LEGEND_GAP: i32 = 8;

pub(super) fn legend_row_height() -> i32 {
    (LEGEND_SIZE * 1.5).round() as i32
}

pub(super) fn legend_size(labels: &[&str]) -> (i32, i32) {
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
pub(super) fn legend_corner(
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
pub(super) enum LegendPlace {
    Inside(Corner),
    Outside,
}

/// Draws the legend box with its top-left corner at `(x0, y0)` of `area` (pixels).
/// Drawn by hand rather than with plotters' series labels, whose glyph closures need
/// composed elements (see [`draw_markers`]).
pub(super) fn draw_legend<DB: DrawingBackend>(
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
