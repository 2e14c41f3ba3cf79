//! `favor run`, `favor exact`, `favor projection` and `favor calibrate`: attention on `.npy`
//! files, and data-aware maps calibrated from them (saved as `.npy` or `.safetensors`).

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use favor_core::{
    ExactOptions, Shape, softmax_attention_tiled, softmax_attention_tiled_scratch_len,
};
use favor_tensor::{
    Compat, DataAwareMap, Kernel, Performer, Precision, Projection, RowNorms, TensorView,
};

use crate::args::{CliError, CliResult, elements, try_zeros};
use favor_npy as npy;

/// One line naming the file.
fn in_file(path: &Path, what: impl std::fmt::Display) -> CliError {
    CliError::input(format!("{}: {what}", path.display()))
}

/// Where a flat index of an array of `shape` lies: `batch b, head h, row r, column c` for
/// `(B, H, L, d)` files, `row r, column c` for `(L, d)`, else the index tuple.
fn position(shape: &[usize], mut flat: usize) -> String {
    let mut index = vec![0; shape.len()];
    for (i, &d) in index.iter_mut().zip(shape).rev() {
        *i = flat % d.max(1);
        flat /= d.max(1);
    }
    match index[..] {
        [b, h, r, c] => format!("batch {b}, head {h}, row {r}, column {c}"),
        [r, c] => format!("row {r}, column {c}"),
        _ => format!("{index:?}"),
    }
}

/// The `--out` file, opened (created if need be, never truncated) before anything is read
/// or computed, so that a path that cannot be written (a missing directory, a directory, no
/// permission) fails at once rather than after all the work.
struct Output {
    path: PathBuf,
    file: Option<File>,
    /// This run created the file: it goes again if nothing is written.
    created: bool,
}

impl Output {
    fn open(path: PathBuf) -> CliResult<Self> {
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| in_file(&path, format!("cannot write: {e}")))?;
        Ok(Self {
            path,
            file: Some(file),
            created: !existed,
        })
    }

    /// Replaces the file's contents with the `.npy` of `data`. A write that fails (a full
    /// disk) removes what it left of a regular file: a truncated `.npy` is no result.
    fn write(self, shape: &[usize], data: &[f32]) -> CliResult<()> {
        self.write_with(|w| npy::write_to(w, shape, data))
    }

    /// Replaces the file's contents with what `body` writes, as [`write`](Self::write) does.
    fn write_with(
        mut self,
        body: impl FnOnce(&mut std::io::BufWriter<&File>) -> Result<(), npy::NpyError>,
    ) -> CliResult<()> {
        let Some(file) = self.file.take() else {
            return Err(CliError::failure("internal error: output written twice"));
        };
        // Only a regular file has contents to replace; a device or a pipe takes a stream.
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        let written = (|| -> Result<(), npy::NpyError> {
            if regular {
                file.set_len(0)?;
            }
            let mut w = std::io::BufWriter::new(&file);
            body(&mut w)?;
            w.flush()?;
            Ok(())
        })();
        self.created = false;
        written.map_err(|e| {
            let removed = regular && std::fs::remove_file(&self.path).is_ok();
            let note = if removed {
                " (the incomplete file was removed)"
            } else {
                ""
            };
            in_file(&self.path, format!("cannot write: {e}{note}"))
        })
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // An error came before the write: a file this run created goes again, one that
        // existed is left as it was (it was never truncated).
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Fails (exit 2, one line) unless `path` can be written: for an output written only after
/// a long computation (`--plot`, `--markdown`), found out before it starts. Nothing is
/// left behind: a file created to find out is removed, an existing one is not changed.
pub fn check_writable(path: &Path) -> CliResult<()> {
    Output::open(path.to_path_buf()).map(drop)
}

/// A [`render_png`](crate::plot::render_png) error for `path`: exit 2 when the image could
/// not be written (a full disk: the path itself was checked up front), 1 when the plotting
/// itself failed.
pub fn plot_error(path: &Path, e: crate::plot::PlotError) -> CliError {
    let line = format!("{}: {e}", path.display());
    match e {
        crate::plot::PlotError::Write(_) => CliError::input(line),
        crate::plot::PlotError::Draw(_) => CliError::failure(line),
    }
}

/// One input file: its shape as written, as `[B, H, L, d]`, and its data.
struct Input {
    path: PathBuf,
    shape: Vec<usize>,
    shape4: [usize; 4],
    array: npy::Array,
}

impl Input {
    /// Reads `(L, d)` or `(B, H, L, d)` of any float dtype; every element must be finite.
    fn read(path: PathBuf) -> CliResult<Self> {
        let a = npy::read(&path).map_err(|e| in_file(&path, e))?;
        let shape4 = match a.shape[..] {
            [l, d] => [1, 1, l, d],
            [b, h, l, d] => [b, h, l, d],
            _ => {
                return Err(in_file(
                    &path,
                    format!(
                        "shape {:?} has rank {}, expected (L, d) or (B, H, L, d)",
                        a.shape,
                        a.shape.len()
                    ),
                ));
            }
        };
        if shape4.contains(&0) {
            return Err(in_file(
                &path,
                format!("shape {:?} has an empty dimension", a.shape),
            ));
        }
        if let Some((i, x)) = a.find(|x| !x.is_finite()) {
            return Err(in_file(
                &path,
                format!("element at {} is {x}", position(&a.shape, i)),
            ));
        }
        Ok(Self {
            path,
            shape: a.shape.clone(),
            shape4,
            array: a,
        })
    }

    /// The data in f32 (borrowed from a float32 file); an error naming the file if a value
    /// does not fit.
    fn f32(&self) -> CliResult<Cow<'_, [f32]>> {
        if let Some((i, x)) = self.array.find(|x| !(x as f32).is_finite()) {
            return Err(in_file(
                &self.path,
                format!(
                    "element at {} = {x:e} does not fit float32 (use --precision f64)",
                    position(&self.shape, i)
                ),
            ));
        }
        match &self.array.data {
            npy::Data::F32(v) => Ok(Cow::Borrowed(v)),
            _ => (self.array.to_f32().map(Cow::Owned)).map_err(|e| in_file(&self.path, e)),
        }
    }

    /// The data in f64 (exact for every stored type; borrowed from a float64 file).
    fn f64(&self) -> CliResult<Cow<'_, [f64]>> {
        match &self.array.data {
            npy::Data::F64(v) => Ok(Cow::Borrowed(v)),
            _ => (self.array.to_f64().map(Cow::Owned)).map_err(|e| in_file(&self.path, e)),
        }
    }
}

/// A view of one input's data in its 4-d shape.
fn view<'a, E: favor_tensor::Element>(input: &Input, data: &'a [E]) -> TensorView<'a, E> {
    TensorView::new(input.shape4, data).expect("shape checked on read")
}

/// The files of `--q --k --v --out`, as given.
#[derive(Debug, Clone, clap::Args)]
pub struct Paths {
    /// Queries: .npy of shape (L, d) or (B, H, L, d), float16/32/64.
    #[arg(long, value_name = "Q.npy")]
    pub q: PathBuf,
    /// Keys, shaped like the queries.
    #[arg(long, value_name = "K.npy")]
    pub k: PathBuf,
    /// Values: (…, L, dv); dv may differ from d.
    #[arg(long, value_name = "V.npy")]
    pub v: PathBuf,
    /// The output: float32 .npy of shape (…, L, dv).
    #[arg(long, value_name = "OUT.npy")]
    pub out: PathBuf,
}

/// How the projection W is drawn, in `favor run` and `favor projection` alike: m, the seed,
/// `--projection-kind` and `--norms` (checked by [`DrawFlags::projection`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DrawFlags {
    /// Random features m (default 256).
    #[arg(long, value_name = "M")]
    pub features: Option<usize>,
    /// Projection seed (default 0).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// orthogonal|iid|sorf|none (default orthogonal; sorf: structured Hadamard blocks).
    #[arg(long, value_name = "KIND")]
    pub projection_kind: Option<String>,
    /// Row norms of orthogonal projections: chi|sqrt-d (default chi).
    #[arg(long, value_name = "NORMS")]
    pub norms: Option<String>,
}

/// The flags of `favor run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunFlags {
    /// softmax|hyperbolic|trig|relu|elu|exp|abs|square|gerf|saderf (default softmax). gerf
    /// (FAVOR++) and saderf (FAVOR#) fit their parameters to each head of the inputs and are
    /// bidirectional only.
    #[arg(long)]
    pub kernel: Option<Kernel>,
    #[command(flatten)]
    pub draw: DrawFlags,
    /// Use this (m, d) matrix exactly as given: a .npy file, or a performer-pytorch state
    /// dict (.safetensors; see `favor import`) with --layer.
    #[arg(long, value_name = "W.npy")]
    pub projection: Option<PathBuf>,
    /// With --projection STATE.safetensors: the layer whose W to use (its number in
    /// `favor import`'s listing, or its tensor name).
    #[arg(long, value_name = "N|NAME")]
    pub layer: Option<String>,
    /// Use this data-aware map (from `favor calibrate`) in place of the random projection:
    /// .npy or .safetensors, one map per head of the inputs.
    #[arg(long, value_name = "MAP")]
    pub map: Option<PathBuf>,
    /// Causal attention (queries see keys up to their own position).
    #[arg(long)]
    pub causal: bool,
    /// Tokens per causal chunk (default 64).
    #[arg(long, value_name = "C")]
    pub chunk: Option<usize>,
    /// With --causal: run the sequence through a decoding stream (the state a server keeps
    /// between tokens) rather than the whole-sequence forward. The same outputs up to
    /// rounding, except with --compat, where the stream is the peer's causal-safe variant
    /// (key shift over the keys seen so far, not the whole sequence).
    #[arg(long)]
    pub stream: bool,
    /// Hybrid attention: keys within W positions of a query (causal: the W before it) get
    /// exact softmax weights, the others random features. 0: only the diagonal is exact.
    #[arg(long, value_name = "W")]
    pub window: Option<usize>,
    /// Hybrid attention: positions 0..S are exact for every query (attention sinks).
    #[arg(long, value_name = "S")]
    pub sinks: Option<usize>,
    /// Accumulation precision: f32|f64 (default f32).
    #[arg(long)]
    pub precision: Option<String>,
    /// Serve weights trained with another implementation with its conventions:
    /// performer-pytorch|google-jax (default none: favor's own). Softmax and generalized
    /// kernels; causal compat is the peer's whole-sequence definition.
    #[arg(long, value_name = "PEER")]
    pub compat: Option<String>,
    /// ε added to generalized features (default 1e-3), or inside a --compat peer's softmax
    /// features (default the peer's).
    #[arg(long, value_name = "EPS")]
    pub epsilon: Option<f64>,
    /// The d^(-1/4) data normaliser on q and k: on|off (given alone: on). Default: on for
    /// softmax kernels, off for generalized ones (on with --compat performer-pytorch).
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    pub data_normalizer: Option<String>,
    #[command(flatten)]
    pub paths: Paths,
}

/// The flags of `favor exact`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExactFlags {
    /// Causal attention (queries see keys up to their own position).
    #[arg(long)]
    pub causal: bool,
    #[command(flatten)]
    pub paths: Paths,
}

/// The flags of `favor projection`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectionExportFlags {
    /// Input dimension d.
    #[arg(long, value_name = "D")]
    pub dim: usize,
    #[command(flatten)]
    pub draw: DrawFlags,
    /// The output: float32 .npy of shape (m, d).
    #[arg(long, value_name = "W.npy")]
    pub out: PathBuf,
}

/// The flags of `favor calibrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateFlags {
    /// Sample queries: .npy of shape (L, d) or (1, H, L, d), float16/32/64.
    #[arg(long, value_name = "Q.npy")]
    pub q: PathBuf,
    /// Sample keys of the same positions, shaped like the queries.
    #[arg(long, value_name = "K.npy")]
    pub k: PathBuf,
    /// Random features m per head (default 256).
    #[arg(long, value_name = "M")]
    pub features: Option<usize>,
    /// Seed of the orthogonal draw (default 0).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Fit the pairs causal attention sees (key j ≤ query i).
    #[arg(long)]
    pub causal: bool,
    /// Fit the pairs hybrid attention with this exact window leaves to the features.
    #[arg(long, value_name = "W")]
    pub window: Option<usize>,
    /// Fit the pairs hybrid attention with these sinks leaves to the features.
    #[arg(long, value_name = "S")]
    pub sinks: Option<usize>,
    /// The map: MAP.npy (float64 (H, m + 1, d + 1): rows [ω | c], last row [μ | 0]) or
    /// MAP.safetensors (omega (H, m, d), offsets (H, m), mu (H, d), F64).
    #[arg(long, value_name = "MAP")]
    pub out: PathBuf,
}

/// A map file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapFormat {
    Npy,
    Safetensors,
}

fn map_format(path: &Path) -> CliResult<MapFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(MapFormat::Npy),
        Some("safetensors") => Ok(MapFormat::Safetensors),
        _ => Err(in_file(
            path,
            "a data-aware map is a .npy or a .safetensors file",
        )),
    }
}

/// Reads a data-aware map (`.npy` or `.safetensors`, by extension); every problem is one
/// line naming the file, exit status 2.
pub fn load_map(path: &Path) -> CliResult<DataAwareMap> {
    let map = match map_format(path)? {
        MapFormat::Npy => {
            let a = npy::read(path).map_err(|e| in_file(path, e))?;
            let data = a.to_f64().map_err(|e| in_file(path, e))?;
            DataAwareMap::from_packed(&a.shape, &data)
        }
        MapFormat::Safetensors => {
            let bytes = std::fs::read(path).map_err(|e| in_file(path, e))?;
            DataAwareMap::from_safetensors(&bytes)
        }
    };
    map.map_err(|e| in_file(path, e))
}

/// `favor calibrate`: a data-aware map per head from sample `--q` and `--k`, into `--out`.
pub fn calibrate(flags: CalibrateFlags) -> CliResult<()> {
    let CalibrateFlags {
        q,
        k,
        features,
        seed,
        causal,
        window,
        sinks,
        out,
    } = flags;
    let format = map_format(&out)?;
    let out = Output::open(out)?;
    let (q, k) = (Input::read(q)?, Input::read(k)?);
    if q.shape.len() != k.shape.len() || q.shape4 != k.shape4 {
        return Err(in_file(
            &k.path,
            format!(
                "shape {:?} does not match {}'s {:?} (calibration pairs queries and keys of the \
                 same positions)",
                k.shape,
                q.path.display(),
                q.shape
            ),
        ));
    }
    let [b, heads, _, dim] = q.shape4;
    if b != 1 {
        return Err(in_file(
            &q.path,
            format!(
                "shape {:?}: calibration takes one chunk per head, (L, d) or (1, H, L, d)",
                q.shape
            ),
        ));
    }
    let mut builder = Performer::builder(dim)
        .heads(heads)
        .seed(seed.unwrap_or(0))
        .causal(causal);
    if let Some(m) = features {
        builder = builder.features(m);
    }
    if let Some(w) = window {
        builder = builder.window(w);
    }
    if let Some(s) = sinks {
        builder = builder.sinks(s);
    }
    let (qd, kd) = (q.f64()?, k.f64()?);
    let attn = builder
        .calibrate(view(&q, &qd), view(&k, &kd))
        .build()
        .map_err(|e| match &e {
            favor_tensor::Error::Core { .. } | favor_tensor::Error::Shape { .. } => {
                in_file(&q.path, e)
            }
            _ => CliError::input(e.to_string()),
        })?;
    let Some(map) = attn.data_aware_map() else {
        return Err(CliError::failure("internal error: no map was calibrated"));
    };
    match format {
        MapFormat::Npy => {
            let (shape, data) = map.to_packed();
            out.write_with(|w| npy::write_to(w, &shape, &data))
        }
        MapFormat::Safetensors => {
            let bytes = map
                .to_safetensors()
                .map_err(|e| CliError::failure(e.to_string()))?;
            out.write_with(|w| Ok(w.write_all(&bytes)?))
        }
    }
}

/// q, k and v, checked against each other, and where the output goes.
struct Inputs {
    q: Input,
    k: Input,
    v: Input,
    out: Output,
}

impl Inputs {
    /// Opens the output, then reads the inputs.
    fn read(paths: Paths) -> CliResult<Self> {
        let out = Output::open(paths.out)?;
        let (q, k, v) = (
            Input::read(paths.q)?,
            Input::read(paths.k)?,
            Input::read(paths.v)?,
        );
        let mismatch = |x: &Input, y: &Input, why: &str| {
            Err(in_file(
                &x.path,
                format!(
                    "shape {:?} does not match {}'s {:?} ({why})",
                    x.shape,
                    y.path.display(),
                    y.shape
                ),
            ))
        };
        if k.shape.len() != q.shape.len() || v.shape.len() != q.shape.len() {
            let odd = if k.shape.len() != q.shape.len() {
                &k
            } else {
                &v
            };
            return mismatch(odd, &q, "different rank");
        }
        let [b, h, _, d] = q.shape4;
        if k.shape4[0] != b || k.shape4[1] != h || k.shape4[3] != d {
            return mismatch(&k, &q, "batch, heads and d must agree");
        }
        if v.shape4[..3] != k.shape4[..3] {
            return mismatch(
                &v,
                &k,
                "values pair with keys: same batch, heads and length",
            );
        }
        Ok(Self { q, k, v, out })
    }

    /// A favor-tensor error, naming the file of the tensor it is about (`matrix`: the
    /// `--projection` file, if any).
    fn library_error(&self, e: favor_tensor::Error, matrix: Option<&Path>) -> CliError {
        let tensor = match &e {
            favor_tensor::Error::OutOfRange { tensor, .. }
            | favor_tensor::Error::Shape { tensor, .. } => Some(*tensor),
            _ => None,
        };
        let file = match tensor {
            Some("q") => Some(self.q.path.as_path()),
            Some("k") => Some(self.k.path.as_path()),
            Some("v") => Some(self.v.path.as_path()),
            Some("projection") => matrix,
            _ => None,
        };
        match file {
            Some(p) => in_file(p, e),
            None => CliError::input(e.to_string()),
        }
    }

    fn causal_check(&self) -> CliResult<()> {
        if self.k.shape4[2] != self.q.shape4[2] {
            return Err(in_file(
                &self.k.path,
                format!(
                    "causal attention needs as many keys as queries: {} has {}, {} has {}",
                    self.q.path.display(),
                    self.q.shape4[2],
                    self.k.path.display(),
                    self.k.shape4[2]
                ),
            ));
        }
        Ok(())
    }

    /// The output shape: the queries' leading dims and the values' last.
    fn out_shape(&self) -> Vec<usize> {
        let mut s = self.q.shape.clone();
        let last = s.len() - 1;
        s[last] = self.v.shape4[3];
        s
    }

    fn write(self, data: &[f32]) -> CliResult<()> {
        let shape = self.out_shape();
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(CliError::input(format!(
                "{}: not written: output element at {} is {} (values beyond float32's range, or a \
                 trigonometric-kernel denominator that crossed zero)",
                self.out.path.display(),
                position(&shape, i),
                data[i]
            )));
        }
        self.out.write(&shape, data)
    }
}

impl DrawFlags {
    /// The projection the flags name, or a usage error.
    pub fn projection(&self) -> CliResult<Projection> {
        projection_of(self.projection_kind.as_deref(), self.norms.as_deref())
    }
}

fn projection_of(kind: Option<&str>, norms: Option<&str>) -> CliResult<Projection> {
    let norms = match norms {
        None | Some("chi") => RowNorms::Chi,
        Some("sqrt-d") => RowNorms::SqrtD,
        Some(s) => {
            return Err(CliError::input(format!(
                "--norms {s:?}: expected chi or sqrt-d"
            )));
        }
    };
    Ok(match kind {
        None | Some("orthogonal") => Projection::Orthogonal(norms),
        Some("iid") => Projection::Iid,
        Some("sorf") => Projection::Sorf,
        Some("none") => Projection::None,
        Some(s) => {
            return Err(CliError::input(format!(
                "--projection-kind {s:?}: expected orthogonal, iid, sorf or none"
            )));
        }
    })
}

fn precision_of(precision: Option<&str>) -> CliResult<Precision> {
    match precision {
        None | Some("f32") => Ok(Precision::F32),
        Some("f64") => Ok(Precision::F64),
        Some(s) => Err(CliError::input(format!(
            "--precision {s:?}: expected f32 or f64"
        ))),
    }
}

/// `attn`'s forward of the whole sequence, or, given the batch, a fresh stream's prefill of
/// it (its token-by-token decode at once).
fn forward_or_stream<E: favor_tensor::Element>(
    attn: &Performer,
    stream_batch: Option<usize>,
    io: &Inputs,
    [q, k, v]: [Cow<'_, [E]>; 3],
) -> favor_tensor::Result<favor_tensor::Tensor> {
    let (q, k, v) = (view(&io.q, &q), view(&io.k, &k), view(&io.v, &v));
    match stream_batch {
        None => attn.forward(q, k, v),
        Some(b) => attn.stream(b)?.prefill(q, k, v),
    }
}

/// `favor run`: FAVOR+ attention of `--q --k --v` into `--out`.
pub fn run(flags: RunFlags) -> CliResult<()> {
    let RunFlags {
        kernel,
        draw,
        projection: matrix,
        layer,
        map,
        causal,
        chunk,
        stream,
        window,
        sinks,
        precision,
        compat,
        epsilon,
        data_normalizer,
        paths,
    } = flags;
    if stream && !causal {
        return Err(CliError::input(
            "--stream decodes causal attention: give --causal too",
        ));
    }
    let kernel = kernel.unwrap_or_default();
    let compat = match compat.as_deref() {
        None => Compat::None,
        Some(s) => Compat::parse(s).ok_or_else(|| {
            CliError::input(format!(
                "--compat {s:?}: expected performer-pytorch, google-jax or none"
            ))
        })?,
    };
    let normalizer = match data_normalizer.as_deref() {
        None => None,
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(s) => {
            return Err(CliError::input(format!(
                "--data-normalizer {s:?}: expected on or off"
            )));
        }
    };
    let projection = draw.projection()?;
    let (features, seed) = (draw.features, draw.seed);
    let seeded = seed.is_some();
    let seed = seed.unwrap_or(0);
    let precision = precision_of(precision.as_deref())?;
    if matrix.is_some() && (seeded || projection != Projection::default()) {
        return Err(CliError::input(
            "--projection gives W exactly; --seed, --norms and --projection-kind do not apply",
        ));
    }
    if map.is_some()
        && (matrix.is_some()
            || features.is_some()
            || seeded
            || draw.projection_kind.is_some()
            || draw.norms.is_some())
    {
        return Err(CliError::input(
            "--map gives the feature map; --projection, --features, --seed, --norms and \
             --projection-kind do not apply",
        ));
    }
    let loaded = map.as_deref().map(load_map).transpose()?;
    let io = Inputs::read(paths)?;
    if causal {
        io.causal_check()?;
    }
    let [_, heads, _, dim] = io.q.shape4;
    let mut b = Performer::builder(dim)
        .heads(heads)
        .value_dim(io.v.shape4[3])
        .kernel(kernel)
        .projection(projection)
        .seed(seed)
        .causal(causal)
        .precision(precision)
        .compat(compat);
    if let Some(e) = epsilon {
        b = b.epsilon(e);
    }
    if let Some(on) = normalizer {
        b = b.data_normalizer(on);
    }
    if let Some(m) = features {
        b = b.features(m);
    }
    if let Some(c) = chunk {
        b = b.chunk(c);
    }
    if let Some(w) = window {
        b = b.window(w);
    }
    if let Some(s) = sinks {
        b = b.sinks(s);
    }
    if layer.is_some() && !matrix.as_deref().is_some_and(crate::import::is_safetensors) {
        return Err(CliError::input(
            "--layer picks a layer of a --projection STATE.safetensors",
        ));
    }
    if let Some(path) = &matrix {
        let (rows, cols, w) = if crate::import::is_safetensors(path) {
            let layers = crate::import::read_projections(path)?;
            let l = crate::import::select(&layers, layer.as_deref(), path)?;
            (l.rows, l.cols, l.data.clone())
        } else {
            let w = npy::read(path).map_err(|e| in_file(path, e))?;
            let [rows, cols] = w.shape[..] else {
                return Err(in_file(
                    path,
                    format!("projection shape {:?}: expected (m, d)", w.shape),
                ));
            };
            (rows, cols, w.to_f64().map_err(|e| in_file(path, e))?)
        };
        if cols != dim {
            return Err(in_file(
                path,
                format!(
                    "projection shape {:?}: d = {cols} but {} has d = {dim}",
                    [rows, cols],
                    io.q.path.display()
                ),
            ));
        }
        b = b.projection_matrix(rows, &w);
    }
    if let Some(m) = loaded {
        b = b.data_aware(m);
    }
    let attn = b.build().map_err(|e| {
        let e = CliError::input(e.to_string());
        match matrix.as_ref().or(map.as_ref()) {
            Some(p) => in_file(p, e),
            None => e,
        }
    })?;
    let batch = stream.then_some(io.q.shape4[0]);
    let out = match precision {
        Precision::F32 => {
            forward_or_stream(&attn, batch, &io, [io.q.f32()?, io.k.f32()?, io.v.f32()?])
        }
        Precision::F64 => {
            forward_or_stream(&attn, batch, &io, [io.q.f64()?, io.k.f64()?, io.v.f64()?])
        }
    }
    .map_err(|e| io.library_error(e, matrix.as_deref()))?;
    io.write(out.data())
}

/// `favor exact`: exact softmax attention of `--q --k --v` into `--out`, computed in f64 from
/// the inputs as stored (f64 files are not rounded to f32 first), rounded to f32 once.
pub fn exact(flags: ExactFlags) -> CliResult<()> {
    let ExactFlags { causal, paths } = flags;
    let io = Inputs::read(paths)?;
    if causal {
        io.causal_check()?;
    }
    let [b, h, lq, d] = io.q.shape4;
    let (lk, dv) = (io.k.shape4[2], io.v.shape4[3]);
    let shape = Shape {
        queries: lq,
        keys: lk,
        dim: d,
        value_dim: dv,
    };
    let opts = ExactOptions {
        causal,
        ..Default::default()
    };
    let kernels = favor_simd::detected();
    let (q, k, v) = (io.q.f64()?, io.k.f64()?, io.v.f64()?);
    let mut out = try_zeros("output", elements("output", &[b, h, lq, dv])?)?;
    let head = "exact attention of one head";
    let mut head_out = try_zeros(head, elements(head, &[lq, dv])?)?;
    let scratch_len = softmax_attention_tiled_scratch_len(TILE)
        .map_err(|e| CliError::failure(format!("exact attention scratch: {e}")))?;
    let mut scratch = try_zeros("exact attention scratch", scratch_len)?;
    for (i, o) in out.chunks_mut(lq * dv).enumerate() {
        let (bi, hi) = (i / h, i % h);
        let (q, k, v) = (
            view(&io.q, &q).head(bi, hi),
            view(&io.k, &k).head(bi, hi),
            view(&io.v, &v).head(bi, hi),
        );
        softmax_attention_tiled(
            &kernels,
            q,
            k,
            v,
            shape,
            &opts,
            TILE,
            &mut head_out,
            &mut scratch,
        )
        .map_err(|e| CliError::input(format!("batch {bi}, head {hi}: {e}")))?;
        for (a, &x) in o.iter_mut().zip(&head_out) {
            *a = x as f32;
        }
    }
    io.write(&out)
}

/// Query and key tile of `favor exact`.
const TILE: usize = 128;

/// `favor projection`: writes the projection `favor run` would draw, as f32 `(m, d)`.
pub fn projection(flags: ProjectionExportFlags) -> CliResult<()> {
    let m = flags
        .draw
        .features
        .unwrap_or(favor_tensor::DEFAULT_FEATURES);
    let d = flags.dim;
    let seed = flags.draw.seed.unwrap_or(0);
    let projection = flags.draw.projection()?;
    let out = flags.out;
    if projection == Projection::None {
        return Err(CliError::input(
            "--projection-kind none has no matrix to export",
        ));
    }
    let out = Output::open(out)?;
    let attn = Performer::builder(d)
        .features(m)
        .projection(projection)
        .seed(seed)
        .build()
        .map_err(|e| CliError::input(e.to_string()))?;
    out.write(&[m, d], attn.weights().f32())
}
