//! [`DataAwareMap`]: a calibrated (data-aware) softmax feature map per head — favor-core's
//! [`DataAwareSoftmax`] parts held for every head in both precisions — with its calibration
//! from sample queries and keys and its two file formats (safetensors and a packed `.npy`
//! array), read and written as bytes here, never trusted.

use std::sync::Arc;

use favor_core::{Calibration, DataAwareParts, DataAwareSoftmax, ProjectionKind, RowNorms};

use crate::alloc::{self, try_zeros};
use crate::backend::Real;
use crate::config::{Config, Kernel, Projection};
use crate::error::{Error, Result};
use crate::tensor::{Element, TensorView};
use crate::weights::Weights;

/// A data-aware (calibrated) softmax feature map for every head of a layer: per head h,
/// the projection ωₕ (`m × d`), the per-feature offsets cₕ (`m`) and the key shift μₕ (`d`)
/// of favor-core's [`DataAwareSoftmax`], `φ(x)ᵣ = exp(ωᵣ·x − |x|²/2 + cᵣ)/√m`, which keeps
/// FAVOR+'s cost and unbiasedness and draws ω from a Gaussian fitted to the head's data
/// (lower variance on the anisotropic queries and keys of trained models).
///
/// Made by [`PerformerBuilder::calibrate`](crate::PerformerBuilder::calibrate) from sample
/// queries and keys (read back with [`Performer::data_aware_map`](crate::Performer::data_aware_map)),
/// or loaded from a file ([`from_safetensors`](Self::from_safetensors),
/// [`from_packed`](Self::from_packed)) and given to
/// [`PerformerBuilder::data_aware`](crate::PerformerBuilder::data_aware). A
/// [`Performer`](crate::Performer) with a map shifts each head's keys by its μ (a copy:
/// inputs are never changed) on every path — FAVOR+ and hybrid attention's exact window
/// alike, which the shift does not change — and maps queries and keys with the head's
/// `DataAwareSoftmax`.
///
/// The f64 parts are the map; the f32 parts, which [`Precision::F32`](crate::Precision::F32)
/// uses, are their rounding (so a map saved as f64 and loaded back reproduces both
/// precisions bit for bit).
///
/// # Files
/// - **safetensors** ([`to_safetensors`](Self::to_safetensors)): tensors `omega`
///   `[H, m, d]`, `offsets` `[H, m]` and `mu` `[H, d]`, each F64 or F32 (written as F64).
///   Other tensors are ignored.
/// - **`.npy`** ([`to_packed`](Self::to_packed)): one array `[H, m + 1, d + 1]`; for head
///   h, rows `0..m` are `[ωᵣ | cᵣ]` and row m is `[μ | 0]` (the last element must be 0).
///
/// Loading checks every shape, that each part is finite, and what `DataAwareSoftmax`
/// itself requires (offsets within a quarter of the type's range, ω fitting f32); a
/// malformed file is an [`Error`], never a panic.
///
/// ```
/// use favor_tensor::{DataAwareMap, Performer, TensorView};
/// let (h, l, d, m) = (2, 64, 8, 16);
/// let q: Vec<f32> = (0..h * l * d).map(|i| (i as f32 * 0.37).sin()).collect();
/// let k: Vec<f32> = (0..h * l * d).map(|i| (i as f32 * 0.71).cos() + 0.5).collect();
/// let (qs, ks) = (TensorView::new([1, h, l, d], &q)?, TensorView::new([1, h, l, d], &k)?);
/// let attn = Performer::builder(d).heads(h).features(m).calibrate(qs, ks).build()?;
/// let map = attn.data_aware_map().unwrap();
/// assert_eq!((map.heads(), map.features(), map.dim()), (h, m, d));
/// // Saved and loaded back, the map is the same, bit for bit.
/// let again = DataAwareMap::from_safetensors(&map.to_safetensors()?)?;
/// assert_eq!(again.omega(1), map.omega(1));
/// let same = Performer::builder(d).heads(h).data_aware(again).build()?;
/// assert_eq!(same.forward(qs, ks, ks)?.data(), attn.forward(qs, ks, ks)?.data());
/// # Ok::<(), favor_tensor::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DataAwareMap {
    heads: usize,
    features: usize,
    dim: usize,
    /// ω of each head in both precisions, with transposes.
    omega: Vec<Weights>,
    /// `[H, m]` offsets and `[H, d]` shifts, in f64 and rounded to f32.
    offsets: Vec<f64>,
    mu: Vec<f64>,
    offsets32: Vec<f32>,
    mu32: Vec<f32>,
}

/// `Error::Map` with a formatted line.
fn bad(s: impl Into<String>) -> Error {
    Error::Map(s.into())
}

/// Checks that `data` has `heads · width` elements, all finite (naming the first that is
/// not by head, row and column, rows of `cols`).
fn check_part(what: &str, data: &[f64], heads: usize, width: usize, cols: usize) -> Result<()> {
    let want = heads
        .checked_mul(width)
        .ok_or_else(|| bad(format!("{what}: size overflows")))?;
    if data.len() != want {
        return Err(bad(format!(
            "{what}: {} elements, expected {heads} heads × {width}",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        let (h, at) = (i / width, i % width);
        return Err(bad(format!(
            "{what}: head {h}, row {}, column {} is {}",
            at / cols,
            at % cols,
            data[i]
        )));
    }
    Ok(())
}

impl DataAwareMap {
    /// A map of `heads` heads, `features` features and dimension `dim` from its parts in
    /// f64, row-major: `omega` `[heads, features, dim]`, `offsets` `[heads, features]`, `mu`
    /// `[heads, dim]`. Errors: zero sizes, wrong lengths, non-finite entries, and parts
    /// favor-core's `DataAwareSoftmax` refuses (in f64 or rounded to f32), as
    /// [`Error::Map`]; [`Error::Alloc`] when the copies do not fit in memory.
    pub fn from_parts(
        heads: usize,
        features: usize,
        dim: usize,
        omega: &[f64],
        offsets: &[f64],
        mu: &[f64],
    ) -> Result<Self> {
        if heads == 0 || features == 0 || dim == 0 {
            return Err(bad(format!(
                "heads, features and dim must be positive, got {heads}, {features}, {dim}"
            )));
        }
        let md = features
            .checked_mul(dim)
            .ok_or_else(|| bad("omega: size overflows"))?;
        check_part("omega", omega, heads, md, dim)?;
        check_part("offsets", offsets, heads, features, features)?;
        check_part("mu", mu, heads, dim, dim)?;
        let mut per_head = alloc::try_with_capacity("data-aware map", heads)?;
        for w in omega.chunks_exact(md) {
            let copy = alloc::try_collect("data-aware map", w.iter().copied())?;
            per_head.push(Weights::from_f64(copy, features, dim)?);
        }
        let round = |x: &[f64]| alloc::try_collect("data-aware map", x.iter().map(|&v| v as f32));
        let map = Self {
            heads,
            features,
            dim,
            omega: per_head,
            offsets: alloc::try_collect("data-aware map", offsets.iter().copied())?,
            mu: alloc::try_collect("data-aware map", mu.iter().copied())?,
            offsets32: round(offsets)?,
            mu32: round(mu)?,
        };
        for h in 0..heads {
            for (precision, r) in [
                ("f64", map.head_map::<f64>(h, true).map(drop)),
                ("f32", map.head_map::<f32>(h, true).map(drop)),
            ] {
                r.map_err(|e| bad(format!("head {h} ({precision}): {e}")))?;
            }
        }
        Ok(map)
    }

    /// Heads H.
    pub fn heads(&self) -> usize {
        self.heads
    }
    /// Features m per head.
    pub fn features(&self) -> usize {
        self.features
    }
    /// Query/key dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// ω of head `head` (`m × d`, row-major, f64). Panics if `head ≥ heads()`.
    pub fn omega(&self, head: usize) -> &[f64] {
        self.omega[head].f64()
    }
    /// The offsets cᵣ of head `head` (`m`, f64). Panics if `head ≥ heads()`.
    pub fn offsets(&self, head: usize) -> &[f64] {
        &self.offsets[head * self.features..(head + 1) * self.features]
    }
    /// The key shift μ of head `head` (`d`, raw key units, f64). Panics if `head ≥ heads()`.
    pub fn mu(&self, head: usize) -> &[f64] {
        &self.mu[head * self.dim..(head + 1) * self.dim]
    }
    /// Head `head`'s ω, offsets and μ as [`Precision::F32`](crate::Precision::F32) uses
    /// them: the f64 parts rounded. Panics if `head ≥ heads()`.
    pub fn parts_f32(&self, head: usize) -> (&[f32], &[f32], &[f32]) {
        let (m, d) = (self.features, self.dim);
        (
            self.omega[head].f32(),
            &self.offsets32[head * m..(head + 1) * m],
            &self.mu32[head * d..(head + 1) * d],
        )
    }

    /// Head `h`'s ω, ωᵀ, offsets and μ in `T`.
    pub(crate) fn head_parts<T: Real>(&self, h: usize) -> (&[T], &[T], &[T], &[T]) {
        let (w, wt) = T::weights(&self.omega[h]);
        let (m, d) = (self.features, self.dim);
        let (c, mu) = T::parts(&self.offsets, &self.offsets32, &self.mu, &self.mu32);
        (w, wt, &c[h * m..(h + 1) * m], &mu[h * d..(h + 1) * d])
    }

    /// Head `h`'s map in `T`, with the data normaliser on or off.
    pub(crate) fn head_map<T: Real>(
        &self,
        h: usize,
        normalizer: bool,
    ) -> favor_core::Result<DataAwareSoftmax<'_, T>> {
        let (w, wt, c, mu) = self.head_parts::<T>(h);
        DataAwareSoftmax::new(w, c, mu, self.features, self.dim)
            .and_then(|p| p.with_transposed_projection(wt))
            .map(|p| p.with_data_normalizer(normalizer))
    }

    /// The largest row norm of any head's ω (f64), for the range check.
    pub(crate) fn row_norm(&self) -> f64 {
        self.omega.iter().map(|w| w.row_norm).fold(0.0, f64::max)
    }

    /// Calibrates a map for the layer `cfg` from one chunk per head: `q` `[1, H, L, d]` and
    /// `k` `[1, Hkv, L, d]` (f64 copies, `q_shape`/`k_shape` as given), query head h with
    /// key head `h / (H / Hkv)`, with favor-core's [`calibrate`](favor_core::calibrate)
    /// (m = `cfg.features`, `seed` for every head, the pair set of `cfg`'s window, sinks
    /// and causality).
    pub(crate) fn calibrate(cfg: &Config, seed: u64, sample: &Sample) -> Result<Self> {
        if cfg.kernel != Kernel::Softmax {
            return Err(Error::Config(
                "a data-aware map is a softmax map: it needs Kernel::Softmax".into(),
            ));
        }
        let projection = match cfg.projection {
            Projection::Orthogonal(RowNorms::Chi) => ProjectionKind::Orthogonal(RowNorms::Chi),
            Projection::Iid => ProjectionKind::Iid,
            Projection::Simplex => ProjectionKind::Simplex,
            Projection::Orthogonal(RowNorms::SqrtD) | Projection::Sorf | Projection::None => {
                return Err(Error::Config(
                    "calibration draws Gaussian rows: use orthogonal (chi norms), iid or simplex \
                     projections"
                        .into(),
                ));
            }
        };
        let (h, hkv, d) = (cfg.heads, cfg.kv_heads, cfg.dim);
        check_sample(
            "q_sample",
            sample.q_shape,
            [Some(1), Some(h), None, Some(d)],
        )?;
        let l = sample.q_shape[2];
        check_sample(
            "k_sample",
            sample.k_shape,
            [Some(1), Some(hkv), Some(l), Some(d)],
        )?;
        let m = cfg.features;
        let cal = Calibration {
            projection,
            shape: cfg.hybrid,
            causal: cfg.causal,
            ..Calibration::new(m, seed)
        };
        let n = alloc::len(
            "calibration scratch",
            favor_core::calibrate_scratch_len(l, d, m),
        )?;
        let mut scratch = try_zeros::<f64>("calibration scratch", n)?;
        let size = |n: Option<usize>| {
            n.ok_or(Error::Alloc {
                what: "data-aware map",
                bytes: None,
            })
        };
        let mut omega = try_zeros("data-aware map", size(h.checked_mul(m * d))?)?;
        let mut offsets = try_zeros("data-aware map", size(h.checked_mul(m))?)?;
        let mut mu = try_zeros("data-aware map", size(h.checked_mul(d))?)?;
        let group = h / hkv;
        let head = l * d;
        for i in 0..h {
            let (q, k) = (
                &sample.q[i * head..(i + 1) * head],
                &sample.k[i / group * head..(i / group + 1) * head],
            );
            let parts = DataAwareParts {
                omega: &mut omega[i * m * d..(i + 1) * m * d],
                offsets: &mut offsets[i * m..(i + 1) * m],
                mu: &mut mu[i * d..(i + 1) * d],
            };
            favor_core::calibrate(q, k, d, &cal, &mut scratch, parts).map_err(|source| {
                Error::Core {
                    batch: 0,
                    head: i,
                    source,
                }
            })?;
        }
        Self::from_parts(h, m, d, &omega, &offsets, &mu)
    }

    /// Checks the map fits a layer of `heads` heads and dimension `dim`.
    pub(crate) fn check_layer(&self, heads: usize, dim: usize) -> Result<()> {
        if self.heads != heads || self.dim != dim {
            return Err(Error::Config(format!(
                "the data-aware map has {} heads of dimension {}, the layer {heads} of {dim}",
                self.heads, self.dim
            )));
        }
        Ok(())
    }

    /// The map as one `[H, m + 1, d + 1]` array (row-major, f64), the `.npy` layout: for
    /// head h, rows `0..m` are `[ωᵣ | cᵣ]`, row m is `[μ | 0]`.
    pub fn to_packed(&self) -> ([usize; 3], Vec<f64>) {
        let (h, m, d) = (self.heads, self.features, self.dim);
        let mut out = Vec::with_capacity(h * (m + 1) * (d + 1));
        for i in 0..h {
            for (r, w) in self.omega(i).chunks_exact(d).enumerate() {
                out.extend_from_slice(w);
                out.push(self.offsets(i)[r]);
            }
            out.extend_from_slice(self.mu(i));
            out.push(0.0);
        }
        ([h, m + 1, d + 1], out)
    }

    /// A map from the `[H, m + 1, d + 1]` array of [`to_packed`](Self::to_packed) (`shape` as
    /// stored, `data` row-major in f64). Errors ([`Error::Map`]): another rank, a dimension
    /// below 1 (H) or 2 (the others), a length that is not the shape's, a last element of a
    /// μ row other than 0, and everything [`from_parts`](Self::from_parts) refuses.
    pub fn from_packed(shape: &[usize], data: &[f64]) -> Result<Self> {
        let &[h, m1, d1] = shape else {
            return Err(bad(format!(
                "packed map of shape {shape:?}: expected [heads, features + 1, dim + 1]"
            )));
        };
        if h == 0 || m1 < 2 || d1 < 2 {
            return Err(bad(format!(
                "packed map of shape {shape:?}: needs at least 1 head, 1 feature and dimension 1"
            )));
        }
        let (m, d) = (m1 - 1, d1 - 1);
        let per = m1
            .checked_mul(d1)
            .filter(|p| p.checked_mul(h) == Some(data.len()))
            .ok_or_else(|| {
                bad(format!(
                    "packed map of shape {shape:?} with {} elements",
                    data.len()
                ))
            })?;
        let n = |x: usize| h.saturating_mul(x);
        let mut omega = alloc::try_with_capacity("data-aware map", n(m * d))?;
        let mut offsets = alloc::try_with_capacity("data-aware map", n(m))?;
        let mut mu = alloc::try_with_capacity("data-aware map", n(d))?;
        for (i, head) in data.chunks_exact(per).enumerate() {
            for row in head[..m * d1].chunks_exact(d1) {
                omega.extend_from_slice(&row[..d]);
                offsets.push(row[d]);
            }
            let last = &head[m * d1..];
            mu.extend_from_slice(&last[..d]);
            if last[d] != 0.0 {
                return Err(bad(format!(
                    "packed map: head {i}, row {m} (μ) ends in {}, expected 0",
                    last[d]
                )));
            }
        }
        Self::from_parts(h, m, d, &omega, &offsets, &mu)
    }

    /// The map as safetensors bytes: `omega` `[H, m, d]`, `offsets` `[H, m]`, `mu` `[H, d]`,
    /// all F64 (little-endian).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        use safetensors::{Dtype, tensor::TensorView as St};
        let (h, m, d) = (self.heads, self.features, self.dim);
        let bytes = |x: &mut dyn Iterator<Item = f64>| -> Vec<u8> {
            x.flat_map(|v| v.to_le_bytes()).collect()
        };
        let omega = bytes(&mut self.omega.iter().flat_map(|w| w.f64().iter().copied()));
        let offsets = bytes(&mut self.offsets.iter().copied());
        let mu = bytes(&mut self.mu.iter().copied());
        fn st(shape: Vec<usize>, data: &[u8]) -> Result<St<'_>> {
            St::new(Dtype::F64, shape, data).map_err(|e| bad(format!("safetensors: {e}")))
        }
        let tensors = [
            ("omega", st(vec![h, m, d], &omega)?),
            ("offsets", st(vec![h, m], &offsets)?),
            ("mu", st(vec![h, d], &mu)?),
        ];
        safetensors::serialize(tensors, None).map_err(|e| bad(format!("safetensors: {e}")))
    }

    /// A map from safetensors bytes holding `omega` `[H, m, d]`, `offsets` `[H, m]` and
    /// `mu` `[H, d]`, each F64 or F32 (other tensors are ignored). Errors ([`Error::Map`]):
    /// bytes that are not safetensors, a missing tensor, another dtype, shapes that do not
    /// agree, and everything [`from_parts`](Self::from_parts) refuses.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f64>)> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("no tensor {name:?}")))?;
            let data: Vec<f64> = match t.dtype() {
                safetensors::Dtype::F64 => t
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
                safetensors::Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
                    .collect(),
                other => {
                    return Err(bad(format!("{name}: dtype {other}, expected F64 or F32")));
                }
            };
            Ok((t.shape().to_vec(), data))
        };
        let (omega, offsets, mu) = (read("omega")?, read("offsets")?, read("mu")?);
        let (h, m, d) = match omega.0[..] {
            [h, m, d] => (h, m, d),
            _ => {
                return Err(bad(format!(
                    "omega of shape {:?}: expected [heads, features, dim]",
                    omega.0
                )));
            }
        };
        if offsets.0 != [h, m] || mu.0 != [h, d] {
            return Err(bad(format!(
                "shapes do not agree: omega {:?}, offsets {:?} (expected [{h}, {m}]), mu {:?} \
                 (expected [{h}, {d}])",
                omega.0, offsets.0, mu.0
            )));
        }
        Self::from_parts(h, m, d, &omega.1, &offsets.1, &mu.1)
    }
}

/// Calibration samples copied into f64 by the builder, checked against the layer at build.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    q_shape: [usize; 4],
    k_shape: [usize; 4],
    q: Vec<f64>,
    k: Vec<f64>,
}

impl Sample {
    /// Copies `q` and `k` (any strides) into row-major f64.
    pub(crate) fn copy<E: Element>(q: TensorView<'_, E>, k: TensorView<'_, E>) -> Result<Self> {
        let copy = |t: &TensorView<'_, E>| -> Result<Vec<f64>> {
            let n = crate::tensor::element_count("calibration sample", t.shape())?;
            let mut v = alloc::try_with_capacity("calibration sample", n)?;
            v.extend(t.rows().flat_map(|r| r.iter().map(|e| e.to_f64())));
            Ok(v)
        };
        Ok(Self {
            q_shape: q.shape(),
            k_shape: k.shape(),
            q: copy(&q)?,
            k: copy(&k)?,
        })
    }
}

/// Checks a sample's shape: one batch element, the layer's heads and dimension, no empty
/// dimension.
fn check_sample(tensor: &'static str, got: [usize; 4], want: [Option<usize>; 4]) -> Result<()> {
    let ok = want.iter().zip(got).all(|(w, g)| w.is_none_or(|w| w == g));
    if ok && got.iter().all(|&n| n > 0) {
        return Ok(());
    }
    let names = ["1", "heads", "seq", "dim"];
    let parts: Vec<String> = want
        .iter()
        .zip(names)
        .map(|(w, n)| w.map_or_else(|| n.to_string(), |w| w.to_string()))
        .collect();
    Err(Error::Shape {
        tensor,
        expected: format!(
            "[{}] (one calibration chunk: batch 1, queries and keys of one length)",
            parts.join(", ")
        ),
        got: got.to_vec(),
    })
}

/// A shared map, as a layer's configuration holds it.
pub(crate) type SharedMap = Arc<DataAwareMap>;

/// Keys `k` shifted by `phi`'s μ, in a copy in `buf` (never the caller's rows): what every
/// path that runs a data-aware map (forward, streams) feeds it. favor-core's errors go through
/// `core`, which names the head.
pub(crate) fn shifted_keys<'b, T: Real>(
    phi: &DataAwareSoftmax<'_, T>,
    k: &[T],
    buf: &'b mut Vec<T>,
    core: impl Fn(favor_core::Error) -> Error,
) -> Result<&'b [T]> {
    let shifted = alloc::try_copy("shifted keys", buf, k)?;
    phi.shift_keys(shifted).map_err(core)?;
    Ok(shifted)
}
