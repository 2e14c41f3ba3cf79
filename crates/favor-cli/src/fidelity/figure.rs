//! The figure: output MSE against m, one panel per norm.

use std::path::Path;

use super::config::Projection;
use super::report::{OutputRow, Report};
use super::text::{norm_label, scaled_norm};
use crate::args::CliResult;
use crate::plot::{Panel, Series, render_png};

/// The figure's panels: one per r, log-log output MSE vs m, one line per (kernel,
/// projection), error bars = std over seeds; iid lines dashed.
pub fn panels(rep: &Report) -> Vec<Panel> {
    let c = &rep.config;
    c.norms
        .iter()
        .map(|&r| {
            let mut series = Vec::new();
            for &k in &c.kernels {
                for &p in &c.projections {
                    for h in c.hybrids() {
                        let rows: Vec<&OutputRow> = rep
                            .output
                            .iter()
                            .filter(|o| {
                                o.r == r && o.kernel == k && o.projection == p && o.hybrid == h
                            })
                            .collect();
                        let shape =
                            h.map_or(String::new(), |h| format!(" w={} s={}", h.window, h.sinks));
                        series.push(Series {
                            label: format!("{} {}{shape}", k.name(), p.name()),
                            points: rows.iter().map(|o| (o.m as f64, o.mse_mean)).collect(),
                            y_err: Some(rows.iter().map(|o| o.mse_std.unwrap_or(0.0)).collect()),
                            dashed: p == Projection::Iid,
                        });
                    }
                }
            }
            Panel {
                title: format!(
                    "r = {} (|q'| = {:.2})",
                    norm_label(r),
                    scaled_norm(r, c.dim)
                ),
                x_label: "random features m".into(),
                y_label: "attention-output MSE".into(),
                log_x: true,
                log_y: true,
                series,
            }
        })
        .collect()
}

/// Writes the figure ([`panels`]) to `path`.
pub fn plot(rep: &Report, path: &Path) -> CliResult<()> {
    let c = &rep.config;
    let title = format!(
        "FAVOR+ vs exact softmax attention: L = {}, d = {}, {} seeds (dashed: iid, solid: orthogonal)",
        c.len, c.dim, c.seeds
    );
    render_png(path, &title, &panels(rep)).map_err(|e| crate::attend::plot_error(path, e))
}
