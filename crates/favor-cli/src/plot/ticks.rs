//! Tick positions and labels, linear and logarithmic, and the plotters axis that draws them.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;

/// Tick positions (plot coordinates) with their labels, and minor grid positions.
pub struct Ticks {
    /// Major ticks: position and label.
    pub major: Vec<(f64, String)>,
    /// Minor grid positions.
    pub minor: Vec<f64>,
}

impl Ticks {
    pub(super) fn none() -> Self {
        Ticks {
            major: Vec::new(),
            minor: Vec::new(),
        }
    }

    pub(super) fn label(&self, p: f64) -> String {
        self.major
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

/// A 1-2-2.5-5 step giving about `target` intervals over `span`, and how many minor
/// intervals split it.
pub(super) fn nice_step(span: f64, target: usize) -> Option<(f64, usize)> {
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
pub(super) fn multiples(lo: f64, hi: f64, step: f64, limit: usize) -> Vec<f64> {
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
pub(super) fn decimals_needed(q: f64) -> usize {
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
pub fn fmt_value(v: f64, quantum: f64, sci: bool) -> String {
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

pub(super) fn wants_sci(values: &[f64]) -> bool {
    let (mut min, mut max) = (f64::INFINITY, 0f64);
    for v in values.iter().map(|v| v.abs()).filter(|v| *v > 0.0) {
        min = min.min(v);
        max = max.max(v);
    }
    max >= 1e5 || min < 1e-3
}

pub(super) fn linear_ticks(lo: f64, hi: f64, target: usize) -> Ticks {
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

pub fn superscript(n: i64) -> String {
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
pub fn log_ticks(lo: f64, hi: f64, target: usize) -> Ticks {
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
pub(super) struct TickAxis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) major: Vec<f64>,
    pub(super) minor: Vec<f64>,
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

pub(super) fn ticks_for(lo: f64, hi: f64, log: bool, target: usize) -> Ticks {
    if log {
        log_ticks(lo, hi, target)
    } else {
        linear_ticks(lo, hi, target)
    }
}
