//! A series made ready to draw: data to plot coordinates (log axes in decades), error bars,
//! and the axis ranges.

use super::series::Series;

/// How a data value becomes a position on a (linear) plotters axis.
#[derive(Clone, Copy)]
pub(super) struct AxisMap {
    pub(super) log: bool,
}

impl AxisMap {
    pub(super) fn to_plot(self, v: f64) -> Option<f64> {
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
pub(super) struct Bar {
    pub(super) x: f64,
    pub(super) lo: Option<f64>,
    pub(super) hi: f64,
}

pub(super) struct Prepared {
    pub(super) points: Vec<(f64, f64)>,
    pub(super) bars: Vec<Bar>,
}

pub(super) fn prepare(series: &Series, xm: AxisMap, ym: AxisMap) -> Prepared {
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
pub(super) fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
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
