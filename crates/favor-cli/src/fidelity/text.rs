//! Presentation: number formats, aligned tables, the plain-text report and the command line
//! that reproduces a run.

use std::fmt::Write as _;

use favor_core::HybridShape;

use super::config::{Config, Kernel, Setting};
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

/// Whether the tables carry the cost columns (window, sinks, exact keys per query,
/// features): only when some row is hybrid, so the default report keeps its layout.
pub(super) fn with_costs(cfg: &Config) -> bool {
    !cfg.windows.is_empty()
}

/// Mean over the L queries of the keys bidirectional hybrid attention weighs exactly (the
/// window `|i − j| ≤ w` and the sinks, counted once); 0 for FAVOR+.
pub(super) fn exact_keys_per_query(hybrid: Option<HybridShape>, len: usize) -> f64 {
    let Some(HybridShape { window, sinks }) = hybrid else {
        return 0.0;
    };
    let total: usize = (0..len)
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(window), (i + window).min(len - 1));
            hi - lo + 1 + sinks.min(lo)
        })
        .sum();
    total as f64 / len as f64
}

/// A row's lead cells: kernel, projection and, with costs, window, sinks, exact keys per
/// query and features per key.
pub(super) fn lead_cells(cfg: &Config, k: Kernel, p: &str, h: Option<HybridShape>) -> Vec<String> {
    let mut lead = vec![k.name().to_string(), p.to_string()];
    if with_costs(cfg) {
        let (w, s) = h.map_or(("–".into(), "–".into()), |h| {
            (h.window.to_string(), h.sinks.to_string())
        });
        let feat = if k.features(1) == 2 { "2m" } else { "m" };
        lead.extend([
            w,
            s,
            fixed(exact_keys_per_query(h, cfg.len), 1),
            feat.into(),
        ]);
    }
    lead
}

/// The lead columns' headings (see [`lead_cells`]).
pub(super) fn lead_head(cfg: &Config) -> Vec<String> {
    let mut head = vec!["kernel".to_string(), "proj".to_string()];
    if with_costs(cfg) {
        head.extend(["w", "sinks", "exact/q", "feat"].map(String::from));
    }
    head
}

pub(super) fn output_tables(rep: &Report, r: f64) -> (Table, Table) {
    let cfg = &rep.config;
    let mut head = lead_head(cfg);
    let left = head.len();
    head.extend(cfg.features.iter().map(|m| format!("m={m}")));
    let (mut abs, mut rel) = (Vec::new(), Vec::new());
    for &k in &cfg.kernels {
        for &p in &cfg.projections {
            for h in cfg.hybrids() {
                let rows: Vec<&OutputRow> = rep
                    .output
                    .iter()
                    .filter(|o| o.r == r && o.kernel == k && o.projection == p && o.hybrid == h)
                    .collect();
                let lead = lead_cells(cfg, k, p.name(), h);
                abs.push(
                    lead.iter()
                        .cloned()
                        .chain(rows.iter().map(|o| mse_cell(o)))
                        .collect(),
                );
                rel.push(
                    lead.into_iter()
                        .chain(rows.iter().map(|o| sci(o.rel_mse)))
                        .collect(),
                );
            }
        }
    }
    (
        Table {
            head: head.clone(),
            rows: abs,
            left,
        },
        Table {
            head,
            rows: rel,
            left,
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
        for &k in cfg.kernels.iter().filter(|k| k.has_lemma2()) {
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

pub(super) fn r_heading(cfg: &Config, r: f64) -> String {
    let d = cfg.dim;
    match cfg.setting {
        Setting::Iid => format!(
            "r = {} (|q'| = |k'| = {:.2}; logits q·k/√d have std ≈ r²/d = {:.3})",
            norm_label(r),
            scaled_norm(r, d),
            r * r / d as f64
        ),
        Setting::Local(_) => format!(
            "r = {} (|q'| = {:.2}; a query's logit with its own position is {:.2} without a \
             sink; far logits have std ≈ r²/d = {:.3})",
            norm_label(r),
            scaled_norm(r, d),
            r * r / (d as f64).sqrt(),
            r * r / d as f64
        ),
    }
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
    let line = format!(
        "L = {}, d = dv = {}, {} seeds, {} kernel-level pairs, f64 on backend {} ({} threads), {:.1} s",
        c.len, c.dim, c.seeds, c.pairs, rep.backend, c.threads, rep.seconds
    );
    match c.setting {
        Setting::Iid => line,
        Setting::Local(p) => format!(
            "{line}\nlocal setting: AR(1) directions with a = {}, {}",
            p.corr,
            p.sink_logit.map_or("no sink".into(), |s| format!(
                "sink at position 0 with logit ≈ {s}"
            ))
        ),
    }
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

/// The notes a report on `cfg` carries: [`NOTES`], then those of the local setting, the new
/// maps and hybrid rows where they appear.
pub(super) fn notes(cfg: &Config) -> Vec<&'static str> {
    let mut out = NOTES.to_vec();
    if matches!(cfg.setting, Setting::Local(_)) {
        out.push(LOCAL_NOTE);
    }
    if cfg.kernels.contains(&Kernel::Gerf) {
        out.push(GERF_NOTE);
    }
    if cfg.kernels.contains(&Kernel::DataAware) {
        out.push(DATA_AWARE_NOTE);
    }
    if with_costs(cfg) {
        out.push(HYBRID_NOTE);
    }
    out
}

pub(super) const LOCAL_NOTE: &str = "Local setting: query and key directions follow one \
     AR(1) sequence (neighbours at distance δ have latent correlation a^δ), so nearby \
     positions have the largest logits; with a sink, every query also points toward key 0. \
     The first note's \"every raw query and key row\" excepts the sink key (module docs of \
     favor fidelity).";

pub(super) const GERF_NOTE: &str = "GERF (FAVOR++): A = gerf_optimal_a(gerf_rho(q, k)) from \
     the evaluated q and k (all pairs), per (r, seed), as favor-tensor fits it per (batch, \
     head); m features, the cost of SM+.";

pub(super) const DATA_AWARE_NOTE: &str = "data-aware: calibrated with favor_core::calibrate \
     on a separate draw of the same setting (stream calibration_seed(s)), never on the \
     evaluated inputs, over the pairs the row's hybrid shape leaves to the features (all \
     pairs for FAVOR+); keys shifted by its μ. m features, the cost of SM+ per token.";

pub(super) const HYBRID_NOTE: &str = "Hybrid rows (w, sinks): exact softmax weights for \
     |i − j| ≤ w and the first `sinks` keys, the row's features for every other key, one \
     normaliser; the same projection as the FAVOR+ row above them. exact/q: mean keys per \
     query weighed exactly (O(L·exact/q·d) on top of FAVOR+'s O(L·features·d)); feat: \
     features per key (m or 2m). w = – is plain FAVOR+.";

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
        let _ = writeln!(s, "{}", r_heading(c, r));
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
    for n in notes(c) {
        let _ = writeln!(s, "  - {n}");
    }
    s
}

/// The `favor fidelity` command line that reproduces `cfg` (every option spelt out except
/// `--threads`, which does not change the results).
pub fn command_line(cfg: &Config) -> String {
    let join = |v: Vec<String>| v.join(",");
    let d = Config::for_setting(cfg.setting);
    let mut s = String::from("favor fidelity");
    if let Setting::Local(p) = cfg.setting {
        s.push_str(" --setting local");
        let def = super::config::Local::default();
        if p.corr != def.corr {
            let _ = write!(s, " --corr {}", p.corr);
        }
        if p.sink_logit != def.sink_logit {
            match p.sink_logit {
                Some(x) => {
                    let _ = write!(s, " --sink-logit {x}");
                }
                None => s.push_str(" --no-sink"),
            }
        }
    }
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
    if cfg.windows != d.windows {
        let list = join(cfg.windows.iter().map(|w| w.to_string()).collect());
        let list = if list.is_empty() { "none".into() } else { list };
        let _ = write!(s, " --windows {list}");
    }
    if cfg.sinks != d.sinks {
        let _ = write!(
            s,
            " --sinks {}",
            join(cfg.sinks.iter().map(|w| w.to_string()).collect())
        );
    }
    s
}
