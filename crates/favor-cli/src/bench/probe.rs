//! One memory measurement: a workload at one length, measured in this process (what a
//! `favor bench --memory-probe` child runs), and the line it prints.

use super::measurement::MAX_LEN;
use crate::args::{CliError, CliResult, elements, try_zeros};
use favor_tensor::{Performer, TensorView};
use favor_workload::{self as workload, DIM, FEATURES, HEADS};
use std::fmt;
use std::str::FromStr;

/// Tokens per `Stream::prefill` call of the `memory-stream` workload.
pub const STREAM_CHUNK: usize = 4096;

/// Longest stream `--memory-probe` accepts (2³⁰ tokens).
pub const MAX_STREAM_LEN: usize = 1 << 30;

/// The workloads of `favor bench --memory` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryWorkload {
    /// One bidirectional `Performer::forward`.
    Bidir,
    /// One causal `Performer::forward`.
    Causal,
    /// A causal `Stream` fed by `prefill` in chunks of [`STREAM_CHUNK`].
    Stream,
}

impl MemoryWorkload {
    /// The name in JSON (`memory-bidir`, `memory-causal`, `memory-stream`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bidir => "memory-bidir",
            Self::Causal => "memory-causal",
            Self::Stream => "memory-stream",
        }
    }

    /// The short name in the text table and in `--memory-probe` (`bidir`, `causal`, `stream`).
    pub fn short(self) -> &'static str {
        &self.as_str()["memory-".len()..]
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Bidir, Self::Causal, Self::Stream]
            .into_iter()
            .find(|w| s == w.short() || s == w.as_str())
    }
}

/// One row of `favor bench --memory`: a workload and its length (tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryProbe {
    /// What runs.
    pub workload: MemoryWorkload,
    /// Tokens: the sequence length, or the tokens fed to the stream.
    pub len: usize,
}

impl MemoryProbe {
    /// The rows `--memory` measures (`quick`: the `--quick` ones), in order.
    pub fn defaults(quick: bool) -> Vec<Self> {
        let (short, long, stream) = if quick {
            (1 << 10, 1 << 12, [1 << 12, 1 << 14])
        } else {
            (1 << 12, 1 << 16, [1 << 16, 1 << 20])
        };
        let mut v = Vec::new();
        for workload in [MemoryWorkload::Bidir, MemoryWorkload::Causal] {
            v.extend([short, long].map(|len| Self { workload, len }));
        }
        v.extend(stream.map(|len| Self {
            workload: MemoryWorkload::Stream,
            len,
        }));
        v
    }

    /// Tokens in each input tensor: L, or the stream's chunk (`min(L, STREAM_CHUNK)`).
    pub fn tokens_per_call(&self) -> usize {
        match self.workload {
            MemoryWorkload::Stream => self.len.min(STREAM_CHUNK),
            _ => self.len,
        }
    }
}

impl fmt::Display for MemoryProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.workload.short(), self.len)
    }
}

impl FromStr for MemoryProbe {
    type Err = String;

    /// `WORKLOAD:L`, e.g. `bidir:65536`; a stream's L must be a multiple of its chunk.
    fn from_str(s: &str) -> Result<Self, String> {
        let (w, l) = s
            .split_once(':')
            .ok_or("expected WORKLOAD:L, e.g. bidir:4096")?;
        let workload = MemoryWorkload::parse(w)
            .ok_or("unknown workload (expected bidir, causal or stream)")?;
        let len: usize = l.parse().map_err(|e| format!("L: {e}"))?;
        let max = match workload {
            MemoryWorkload::Stream => MAX_STREAM_LEN,
            _ => MAX_LEN,
        };
        if !(1..=max).contains(&len) {
            return Err(format!("L must be 1 to {max}"));
        }
        let p = Self { workload, len };
        if !len.is_multiple_of(p.tokens_per_call()) {
            return Err(format!(
                "a stream's L must be a multiple of its chunk of {STREAM_CHUNK} tokens"
            ));
        }
        Ok(p)
    }
}

/// One memory measurement (bytes; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMeasurement {
    /// What ran.
    pub probe: MemoryProbe,
    /// Peak resident set size of the process (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// Resident set size before anything was allocated (`VmRSS`).
    pub baseline_rss_bytes: u64,
    /// Bytes of q, k and v (for the stream: of one chunk).
    pub input_bytes: u64,
    /// Bytes of the result tensor (for the stream: of one chunk's).
    pub output_bytes: u64,
}

/// Prefix of the line a `--memory-probe` child prints.
pub(super) const PROBE_TAG: &str = "favor-memory-probe";

impl MemoryMeasurement {
    /// Peak − baseline − inputs − outputs: memory the library held beyond its inputs and
    /// outputs (negative if the allocator gave pages back early).
    pub fn working_bytes(&self) -> i64 {
        let gone = self.baseline_rss_bytes + self.input_bytes + self.output_bytes;
        self.peak_rss_bytes as i64 - gone as i64
    }

    /// One JSON object (no newline) with the keys `workload`, `L`, `peak_rss_bytes`,
    /// `baseline_rss_bytes`, `input_bytes`, `output_bytes` and `working_bytes`, all integers
    /// but the workload's name.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"workload\":\"{}\",\"L\":{},\"peak_rss_bytes\":{},\"baseline_rss_bytes\":{},\
             \"input_bytes\":{},\"output_bytes\":{},\"working_bytes\":{}}}",
            self.probe.workload.as_str(),
            self.probe.len,
            self.peak_rss_bytes,
            self.baseline_rss_bytes,
            self.input_bytes,
            self.output_bytes,
            self.working_bytes(),
        )
    }

    /// The line a `--memory-probe` child prints for its parent:
    /// `favor-memory-probe bidir:4096 peak=… baseline=… input=… output=…` (bytes).
    pub fn probe_line(&self) -> String {
        format!(
            "{PROBE_TAG} {} peak={} baseline={} input={} output={}",
            self.probe,
            self.peak_rss_bytes,
            self.baseline_rss_bytes,
            self.input_bytes,
            self.output_bytes
        )
    }

    /// Reads a [`probe_line`](Self::probe_line) back; `None` unless it is exactly one.
    pub fn parse_probe_line(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        if words.next()? != PROBE_TAG {
            return None;
        }
        let probe = words.next()?.parse().ok()?;
        let mut field = |key: &str| -> Option<u64> {
            let (k, v) = words.next()?.split_once('=')?;
            if k == key { v.parse().ok() } else { None }
        };
        let m = Self {
            probe,
            peak_rss_bytes: field("peak")?,
            baseline_rss_bytes: field("baseline")?,
            input_bytes: field("input")?,
            output_bytes: field("output")?,
        };
        words.next().is_none().then_some(m)
    }
}

/// The value of `key` (e.g. `VmHWM`) in the text of `/proc/self/status`, in bytes.
pub fn status_bytes(status: &str, key: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.split_once(':').is_some_and(|(k, _)| k == key))?;
    let mut words = line.split_once(':')?.1.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// This process's `VmRSS` or `VmHWM`, or the "unsupported" error where there is no
/// `/proc/self/status` with it (not Linux).
pub(super) fn own_memory(key: &str) -> CliResult<u64> {
    let unsupported = || {
        CliError::failure(format!(
            "--memory: unsupported on this OS (peak resident memory is read as {key} from \
             /proc/self/status, which only Linux has)"
        ))
    };
    if !cfg!(target_os = "linux") {
        return Err(unsupported());
    }
    let status = std::fs::read_to_string("/proc/self/status").map_err(|_| unsupported())?;
    status_bytes(&status, key).ok_or_else(unsupported)
}

/// Runs one memory measurement in this process (what a `--memory-probe` child does).
/// Meaningful only in a fresh process: `VmHWM` is the peak since the process started.
pub fn memory_probe(p: MemoryProbe) -> CliResult<MemoryMeasurement> {
    let baseline = own_memory("VmRSS")?;
    let fail = |e: favor_tensor::Error| CliError::failure(format!("memory probe {p}: {e}"));
    let performer = Performer::builder(DIM)
        .heads(HEADS)
        .features(FEATURES)
        .causal(p.workload != MemoryWorkload::Bidir)
        .parallel(false)
        .build()
        .map_err(fail)?;
    let tokens = p.tokens_per_call();
    let what = "memory probe inputs";
    let n = elements(what, &[HEADS, tokens, DIM])?;
    let (mut q, mut k, mut v) = (
        try_zeros(what, n)?,
        try_zeros(what, n)?,
        try_zeros(what, n)?,
    );
    let per_head = tokens * DIM;
    for h in 0..HEADS {
        let r = h * per_head..(h + 1) * per_head;
        workload::fill_inputs(h, &mut q[r.clone()], &mut k[r.clone()], &mut v[r]);
    }
    let shape = [1, HEADS, tokens, DIM];
    let view = |x| TensorView::new(shape, x).map_err(fail);
    let (qv, kv, vv) = (view(&q)?, view(&k)?, view(&v)?);
    match p.workload {
        MemoryWorkload::Bidir | MemoryWorkload::Causal => {
            let out = performer.forward(qv, kv, vv).map_err(fail)?;
            std::hint::black_box(out.data());
        }
        MemoryWorkload::Stream => {
            let mut stream = performer.stream(1).map_err(fail)?;
            for _ in 0..p.len / tokens {
                let out = stream.prefill(qv, kv, vv).map_err(fail)?;
                std::hint::black_box(out.data());
            }
        }
    }
    let peak = own_memory("VmHWM")?;
    let bytes = (n * size_of::<f32>()) as u64;
    Ok(MemoryMeasurement {
        probe: p,
        peak_rss_bytes: peak,
        baseline_rss_bytes: baseline,
        input_bytes: 3 * bytes,
        output_bytes: bytes,
    })
}
