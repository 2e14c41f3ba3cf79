//! Presentation: number formats, aligned tables, the plain-text report and the command line
//! that reproduces a run.

use std::fmt::Write as _;

use super::config::Config;
use super::report::{KernelRow, OutputRow, Report};
use super::study::{mean, sample_std};

/// A number in short scientific notation (`1.23e-3`), or `inf` / `-inf` / `nan`.
pub(super) fn sci(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{x:.2e}")
    }
}

pub(super) fn fixed(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        sci(x)
    }
}

/// A norm for display (`1`, `2`, `0.5`).
pub(super) fn norm_label(r: f64) -> String {
    format!("{r}")
}

pub(super) fn mse_cell(row: &OutputRow) -> String {
    match row.mse_std {
        Some(s) if row.mse_mean.is_finite() => format!("{} ± {}", sci(row.mse_mean), sci(s)),
        _ => sci(row.mse_mean),
    }
}

/// Pooled kernel-level figures for one (r, kernel, projection): `m × relative MSE`
/// (Lemma 2, empirical mean over m and seeds), ratio, and the ratio's standard error over
/// the independent (seed, m) projections.
pub(super) struct Pooled {
    pub(super) lemma: f64,
    pub(super) empirical: f64,
    pub(super) ratio: f64,
    pub(super) se: Option<f64>,
}

pub(super) fn pooled(rows: &[&KernelRow]) -> Pooled {
    let lemma = mean(
        &rows
            .iter()
            .map(|k| k.m as f64 * k.lemma2_rel_mse)
            .collect::<Vec<_>>(),
    );
    let t: Vec<f64> = rows
        .iter()
        .flat_map(|k| {
            let scale = 1.0 / k.lemma2_rel_mse;
            k.rel_per_seed.iter().map(move |x| x * scale)
        })
        .collect();
    let ratio = mean(&t);
    Pooled {
        lemma,
        empirical: ratio * lemma,
        ratio,
        se: sample_std(&t).map(|s| s / (t.len() as f64).sqrt()),
    }
}

/// Table rows as cells; the first `left` columns are left-aligned in text.
pub(super) struct Table {
    pub(super) head: Vec<String>,
    pub(super) rows: Vec<Vec<String>>,
    pub(super) left: usize,
}

impl Table {
    pub(super) fn text(&self) -> String {
        let cols = self.head.len();
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .chain(std::iter::once(&self.head))
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut s = String::new();
        for row in std::iter::once(&self.head).chain(&self.rows) {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = width[c] - cell.chars().count();
                if c > 0 {
                    line.push_str("  ");
                }
                if c < self.left {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                } else {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }

    pub(super) fn markdown(&self) -> String {
        let mut s = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        s.push_str(&line(&self.head));
        let sep: Vec<String> = (0..self.head.len())
            .map(|c| {
                if c < self.left {
                    "---".into()
                } else {
                    "---:".into()
                }
            })
            .collect();
        s.push_str(&line(&sep));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

pub(super) fn output_tables(rep: &Report, r: f64) -> (Table, Table) {
    let cfg = &rep.config;
    let mut head = vec!["kernel".to_string(), "proj".to_string()];
    head.extend(cfg.features.iter().map(|m| format!("m={m}")));
    let (mut abs, mut rel) = (Vec::new(), Vec::new());
    for &k in &cfg.kernels {
        for &p in &cfg.projections {
            let rows: Vec<&OutputRow> = rep
                .output
                .iter()
                .filter(|o| o.r == r && o.kernel == k && o.projection == p)
                .collect();
            let lead = [k.name().to_string(), p.name().to_string()];
            abs.push(
                lead.iter()
                    .cloned()
                    .chain(rows.iter().map(|o| mse_cell(o)))
                    .collect(),
            );
            rel.push(
                lead.iter()
                    .cloned()
                    .chain(rows.iter().map(|o| sci(o.rel_mse)))
                    .collect(),
            );
        }
    }
    (
        Table {
            head: head.clone(),
            rows: abs,
            left: 2,
        },
        Table {
            head,
            rows: rel,
            left: 2,
        },
    )
}

pub(super) fn kernel_table(rep: &Report) -> Table {
    let cfg = &rep.config;
    let head = [
        "r",
        "kernel",
        "proj",
        "m·Lemma2",
        "m·empirical",
        "ratio",
        "± se",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for &r in &cfg.norms {
        for &k in cfg.kernels.iter().filter(|k| k.estimates_softmax()) {
            for &p in &cfg.projections {
                let ks: Vec<&KernelRow> = rep
                    .kernel
                    .iter()
                    .filter(|x| x.r == r && x.kernel == k && x.projection == p)
                    .collect();
                if ks.is_empty() {
                    continue;
                }
                let pl = pooled(&ks);
                rows.push(vec![
                    norm_label(r),
                    k.name().into(),
                    p.name().into(),
                    sci(pl.lemma),
                    sci(pl.empirical),
                    fixed(pl.ratio, 3),
                    pl.se.map_or("—".into(), |s| fixed(s, 3)),
                ]);
            }
        }
    }
    Table {
        head,
        rows,
        left: 3,
    }
}

pub(super) fn scaled_norm(r: f64, d: usize) -> f64 {
    r * (d as f64).powf(-0.25)
}

pub(super) fn r_heading(r: f64, d: usize) -> String {
    format!(
        "r = {} (|q'| = |k'| = {:.2}; logits q·k/√d have std ≈ r²/d = {:.3})",
        norm_label(r),
        scaled_norm(r, d),
        r * r / d as f64
    )
}

pub(super) fn nonfinite_notes(rep: &Report) -> Vec<String> {
    rep.output
        .iter()
        .filter(|o| o.nonfinite_seeds > 0)
        .map(|o| {
            format!(
                "r = {}, {} {}, m = {}: {} of {} seeds gave non-finite outputs",
                norm_label(o.r),
                o.kernel.name(),
                o.projection.name(),
                o.m,
                o.nonfinite_seeds,
                o.mse_per_seed.len()
            )
        })
        .collect()
}

pub(super) fn setting_line(rep: &Report) -> String {
    let c = &rep.config;
    format!(
        "L = {}, d = dv = {}, {} seeds, {} kernel-level pairs, f64 on backend {} ({} threads), {:.1} s",
        c.len, c.dim, c.seeds, c.pairs, rep.backend, c.threads, rep.seconds
    )
}

pub(super) const NOTES: [&str; 5] = [
    "r is the norm of every raw query and key row; the attention is softmax(q·kᵀ/√d)·V, i.e. the \
     features estimate exp(q'·k') with q' = q/d^(1/4). v entries are N(0, 1).",
    "Exact attention and FAVOR+ both run in f64 on the same backend, so the errors are the \
     estimator's variance (and bias), not f32 rounding.",
    "m counts projection rows: SMhyp+ and trig output 2m features (twice SM+'s attention cost).",
    "ReLU (Performer-ReLU, ε = 1e-3, no data normaliser) is a different kernel, not an estimator \
     of softmax: its MSE is its distance from softmax attention and does not vanish as m grows.",
    "trig features are not positive: the estimated denominator can cross zero, giving huge \
     (possibly non-finite) outputs; they are reported as measured.",
];

pub(super) const KERNEL_NOTE: &str = "Kernel level: estimates of exp(q·k/√d) on (q, k) pairs drawn like the \
     inputs, with the attention runs' projections. Relative MSE = E[(est − exp)²]/exp², mean \
     over pairs, times m (Lemma 2's iid value is ∝ 1/m); empirical: pooled over all m and \
     seeds. ratio = empirical/Lemma 2: 1 expected for iid rows, < 1 for orthogonal rows (Thm \
     2). ± se is the sample standard error over the (seed, m) projections; the errors are \
     right-skewed, so on few samples the ratio tends to fall below 1 and the se is too small \
     (SMhyp+ most, SM+ and SMhyp+ at large r by far: their Lemma 2 value is dominated by rare, \
     huge estimates that no feasible sample contains). The test suite checks Lemma 2 with \
     exact fourth moments over 3000 seeds at r = 1.";

/// The report as aligned plain-text tables.
pub fn render_text(rep: &Report) -> String {
    let mut s = String::new();
    let c = &rep.config;
    let _ = writeln!(
        s,
        "favor fidelity: FAVOR+ vs exact softmax attention\n{}\n",
        setting_line(rep)
    );
    for &r in &c.norms {
        let (abs, rel) = output_tables(rep, r);
        let _ = writeln!(s, "{}", r_heading(r, c.dim));
        let _ = writeln!(s, "output MSE, mean ± std over {} seeds", c.seeds);
        s.push_str(&abs.text());
        let _ = writeln!(s, "relative MSE (MSE / mean square of the exact output)");
        s.push_str(&rel.text());
        s.push('\n');
    }
    if !rep.kernel.is_empty() {
        let _ = writeln!(s, "{KERNEL_NOTE}");
        s.push_str(&kernel_table(rep).text());
        s.push('\n');
    }
    let nf = nonfinite_notes(rep);
    if !nf.is_empty() {
        let _ = writeln!(s, "Non-finite outputs:");
        for n in nf {
            let _ = writeln!(s, "  {n}");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "Notes:");
    for n in NOTES {
        let _ = writeln!(s, "  - {n}");
    }
    s
}

/// The `favor fidelity` command line that reproduces `cfg` (every option spelt out except
/// `--threads`, which does not change the results).
pub fn command_line(cfg: &Config) -> String {
    let join = |v: Vec<String>| v.join(",");
    let d = Config::default();
    let mut s = String::from("favor fidelity");
    if cfg.len != d.len {
        let _ = write!(s, " --len {}", cfg.len);
    }
    if cfg.dim != d.dim {
        let _ = write!(s, " --dim {}", cfg.dim);
    }
    if cfg.norms != d.norms {
        let _ = write!(
            s,
            " --norms {}",
            join(cfg.norms.iter().map(|r| r.to_string()).collect())
        );
    }
    if cfg.features != d.features {
        let _ = write!(
            s,
            " --features {}",
            join(cfg.features.iter().map(|m| m.to_string()).collect())
        );
    }
    if cfg.seeds != d.seeds {
        let _ = write!(s, " --seeds {}", cfg.seeds);
    }
    if cfg.pairs != d.pairs {
        let _ = write!(s, " --pairs {}", cfg.pairs);
    }
    if cfg.kernels != d.kernels {
        let _ = write!(
            s,
            " --kernels {}",
            join(cfg.kernels.iter().map(|k| k.id().into()).collect())
        );
    }
    if cfg.projections != d.projections {
        let _ = write!(
            s,
            " --projections {}",
            join(cfg.projections.iter().map(|p| p.id().into()).collect())
        );
    }
    s
}
