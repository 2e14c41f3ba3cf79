//! The report as JSON.

use std::fmt::Write as _;

use super::config::{Config, Setting};
use super::report::Report;

/// The config's keys beyond the paper's study (setting, hybrid shapes), each with a leading
/// comma; empty for the iid setting without windows, so that report keeps its bytes.
fn extra_config(c: &Config) -> String {
    let mut s = String::new();
    if let Setting::Local(p) = c.setting {
        let _ = write!(
            s,
            ", \"setting\": \"local\", \"corr\": {}, \"sink_logit\": {}",
            json_num(p.corr),
            p.sink_logit.map_or("null".into(), json_num)
        );
    }
    if !c.windows.is_empty() {
        let list = |v: &[usize]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = write!(
            s,
            ", \"windows\": [{}], \"sinks\": [{}]",
            list(&c.windows),
            list(&c.sinks)
        );
    }
    s
}

pub(super) fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        "null".into()
    }
}

pub(super) fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub(super) fn json_nums(xs: &[f64]) -> String {
    format!(
        "[{}]",
        xs.iter()
            .map(|&x| json_num(x))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// The report as JSON: `config`, `backend`, `seconds`, `output` rows and `kernel` rows
/// (one object per line). Non-finite numbers are `null`.
pub fn render_json(rep: &Report) -> String {
    let c = &rep.config;
    let mut s = String::from("{\n");
    let _ = writeln!(
        s,
        "\"config\": {{\"len\": {}, \"dim\": {}, \"value_dim\": {}, \"norms\": {}, \"features\": [{}], \
         \"seeds\": {}, \"pairs\": {}, \"threads\": {}, \"kernels\": [{}], \"projections\": [{}], \
         \"attention\": \"softmax(q k^T / sqrt(d)) V, bidirectional; r = norm of raw q and k rows\"{}}},",
        c.len,
        c.dim,
        c.dim,
        json_nums(&c.norms),
        c.features
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(","),
        c.seeds,
        c.pairs,
        c.threads,
        c.kernels
            .iter()
            .map(|k| json_str(k.id()))
            .collect::<Vec<_>>()
            .join(","),
        c.projections
            .iter()
            .map(|p| json_str(p.id()))
            .collect::<Vec<_>>()
            .join(","),
        extra_config(c),
    );
    let _ = writeln!(s, "\"backend\": {},", json_str(rep.backend));
    let _ = writeln!(s, "\"seconds\": {},", json_num(rep.seconds));
    s.push_str("\"output\": [\n");
    let out: Vec<String> = rep
        .output
        .iter()
        .map(|o| {
            // Hybrid rows name their shape; FAVOR+ rows keep the paper study's keys.
            let shape = o.hybrid.map_or(String::new(), |h| {
                format!(", \"window\": {}, \"sinks\": {}", h.window, h.sinks)
            });
            format!(
                "{{\"r\": {}, \"kernel\": {}, \"projection\": {}{}, \"m\": {}, \"mse_mean\": {}, \
                 \"mse_std\": {}, \"rel_mse\": {}, \"nonfinite_seeds\": {}, \"mse_per_seed\": {}}}",
                json_num(o.r),
                json_str(o.kernel.id()),
                json_str(o.projection.id()),
                shape,
                o.m,
                json_num(o.mse_mean),
                o.mse_std.map_or("null".into(), json_num),
                json_num(o.rel_mse),
                o.nonfinite_seeds,
                json_nums(&o.mse_per_seed)
            )
        })
        .collect();
    s.push_str(&out.join(",\n"));
    s.push_str("\n],\n\"kernel\": [\n");
    let ker: Vec<String> = rep
        .kernel
        .iter()
        .map(|k| {
            format!(
                "{{\"r\": {}, \"kernel\": {}, \"projection\": {}, \"m\": {}, \"lemma2_mse\": {}, \
                 \"empirical_mse\": {}, \"lemma2_rel_mse\": {}, \"empirical_rel_mse\": {}, \
                 \"ratio\": {}}}",
                json_num(k.r),
                json_str(k.kernel.id()),
                json_str(k.projection.id()),
                k.m,
                json_num(k.lemma2_mse),
                json_num(k.empirical_mse),
                json_num(k.lemma2_rel_mse),
                json_num(k.empirical_rel_mse),
                json_num(k.ratio)
            )
        })
        .collect();
    s.push_str(&ker.join(",\n"));
    s.push_str("\n]\n}\n");
    s
}
