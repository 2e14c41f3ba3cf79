//! One panel: axes, grid, error bars, lines, markers and legend.

use super::data::{AxisMap, Prepared, padded_range, prepare};
use super::legend::{LEGEND_PAD, LegendPlace, draw_legend, legend_corner, legend_size};
use super::series::{Panel, Series};
use super::style::{
    CAPTION_SIZE, DESC_SIZE, PALETTE, TICK_SIZE, draw_err, draw_markers, text_style, text_width,
};
use super::ticks::{TickAxis, Ticks, ticks_for};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(super) fn draw_panel<DB: DrawingBackend>(
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
    pub(super) const MARGIN: u32 = 8;
    pub(super) const MARGIN_RIGHT: u32 = 18;
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
