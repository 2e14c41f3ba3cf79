//! Target `snapshot_bytes`: favor-core `Stream::restore` (f32 and f64) and favor-tensor
//! `Stream::restore` on arbitrary bytes — raw, or a genuine snapshot with bytes flipped,
//! cut or appended (so the fuzzer gets past magic, version, dimensions and the feature
//! map's 64-bit fingerprint), its checksum then recomputed or not (so that mutations reach the
//! semantic checks behind it; raw bytes reach them through version 1, which has no
//! checksum). Never a panic; and:
//! - `Err` leaves the state bit-identical (its snapshot unchanged);
//! - `Ok` means a valid state: `tokens()` is the header's count, snapshotting again gives
//!   back the same bytes (the log-scale rounded to T, the checksum recomputed; a version-1
//!   snapshot comes back as version 2), and queries and a further step with ordinary inputs
//!   give finite outputs;
//! - an untouched snapshot is accepted and answers exactly like the stream that wrote it.

use arbitrary::{Result, Unstructured};
use favor_core::{Kernels, ProjectionKind, RowNorms, Scalar, Stream};
use favor_tensor::{Backend, Performer, Precision, TensorView};

use crate::bounds::Real;
use crate::input::{Mix, size};
use crate::maps::{MapKind, MapSpec};

/// Decodes a mode byte and checks the bytes that follow.
pub fn check_snapshot_bytes(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    match mode % 5 {
        0 => core_raw::<f32>(u.take_rest()),
        1 => core_raw::<f64>(u.take_rest()),
        2 => tensor_raw(u.take_rest()),
        3 => {
            let _ = core_mutated(&mut u);
        }
        _ => {
            let _ = tensor_mutated(&mut u);
        }
    }
}

/// The fixed map raw bytes are restored into: m = 2, d = 2 (a constant fingerprint the
/// fuzzer can learn from comparisons), dv = 1, so a well-formed version-1 snapshot is
/// 56 + 4·size bytes (version 2: 56 + 12·size + 4).
fn fixed_map() -> MapSpec {
    let (m, d) = (2, 2);
    let mut w = vec![0f64; m * d];
    favor_core::projection(ProjectionKind::Orthogonal(RowNorms::Chi), 1, m, d, &mut w).unwrap();
    MapSpec {
        kind: MapKind::Positive,
        normalizer: true,
        transposed: false,
        d,
        m,
        eps: 0.0,
        w: w.iter().map(|&x| f64::from(x as f32)).collect(),
    }
}

fn cast<T: Real>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

fn snapshot_of<T: Real, F: favor_core::FeatureMap<T>, K: Kernels<T>>(
    s: &Stream<'_, T, F, K>,
) -> Vec<u8> {
    let mut b = vec![0u8; s.snapshot_len()];
    s.snapshot(&mut b).expect("snapshot");
    b
}

/// Restores `bytes` into a fresh stream over `spec` and checks the outcome. `genuine`: the
/// buffer of the stream that wrote the bytes, when they are an untouched snapshot.
fn core_restore<T: Real>(spec: &MapSpec, dv: usize, bytes: &[u8], genuine: Option<&[T]>) {
    let (w, wt) = spec.weights::<T>();
    let map = spec.build(&w, &wt);
    let d = spec.d;
    let len = Stream::<T, _, Scalar>::buffer_len(&map, dv).unwrap();
    let mut buf = vec![T::zero(); len];
    let mut s = Stream::new(Scalar, &map, dv, &mut buf).unwrap();
    let before = snapshot_of(&s);
    let what = format!("core {} restore of {} bytes", T::NAME, bytes.len());
    match s.restore(bytes) {
        Err(e) => {
            assert!(genuine.is_none(), "{what}: genuine snapshot rejected: {e}");
            assert!(
                snapshot_of(&s) == before,
                "{what}: rejected, but the state changed"
            );
        }
        Ok(()) => {
            let tokens = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
            assert_eq!(s.tokens(), tokens, "{what}: tokens()");
            let again = snapshot_of(&s);
            let c_in = f64::from_le_bytes(bytes[48..56].try_into().unwrap());
            let c_t = T::from_f64(c_in).to64();
            let c_out = f64::from_le_bytes(again[48..56].try_into().unwrap());
            assert!(
                c_out.to_bits() == c_t.to_bits(),
                "{what}: log-scale {c_in:e} came back as {c_out:e}"
            );
            let version = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
            assert!(
                again[8..48] == bytes[8..48],
                "{what}: header after restore differs from the restored bytes"
            );
            if version == favor_core::SNAPSHOT_VERSION {
                assert_eq!(again.len(), bytes.len(), "{what}: length");
                let n = bytes.len() - 4;
                assert!(
                    again[56..n] == bytes[56..n],
                    "{what}: snapshot after restore differs from the restored bytes"
                );
            }
            // Ordinary queries must give finite answers.
            let probes = [
                vec![0.0; d],
                (0..d).map(|j| 0.5 - j as f64 * 0.25).collect::<Vec<_>>(),
                (0..d)
                    .map(|j| if j % 2 == 0 { -2.0 } else { 1.5 })
                    .collect(),
            ];
            let mut outs = Vec::new();
            for q in &probes {
                let mut out = vec![T::zero(); dv];
                s.query(&cast::<T>(q), &mut out).expect("query");
                assert!(
                    out.iter().all(|o| o.is_finite()),
                    "{what}: accepted state answers q = {q:?} with {out:?}"
                );
                outs.push(out);
            }
            if let Some(state) = genuine {
                // The stream that wrote the bytes, re-attached: identical answers.
                let (tokens, c) = (s.tokens(), s.state().log_scale());
                let mut b2 = state.to_vec();
                let mut orig = Stream::resume(Scalar, &map, dv, &mut b2, tokens, c).unwrap();
                for (q, got) in probes.iter().zip(&outs) {
                    let mut want = vec![T::zero(); dv];
                    orig.query(&cast::<T>(q), &mut want).unwrap();
                    for (a, b) in got.iter().zip(&want) {
                        assert_eq!(a.bits(), b.bits(), "{what}: restored answers differ");
                    }
                }
            }
            let (k, v) = (vec![T::from_f64(0.25); d], vec![T::one(); dv]);
            let mut out = vec![T::zero(); dv];
            s.step(&cast::<T>(&probes[1]), &k, &v, &mut out)
                .expect("step");
            assert!(
                out.iter().all(|o| o.is_finite()),
                "{what}: a step after restore answers {out:?}"
            );
        }
    }
}

fn core_raw<T: Real>(bytes: &[u8]) {
    core_restore::<T>(&fixed_map(), 1, bytes, None);
}

/// A genuine snapshot of a small stream, then mutations.
fn core_mutated(u: &mut Unstructured<'_>) -> Result<()> {
    if u.arbitrary()? {
        core_mutated_in::<f64>(u)
    } else {
        core_mutated_in::<f32>(u)
    }
}

fn core_mutated_in<T: Real>(u: &mut Unstructured<'_>) -> Result<()> {
    let spec = MapSpec::arbitrary(u, 4, 4, true)?;
    let dv = size(u, 1, 2)?;
    let tokens = size(u, 0, 8)?;
    let mut mix = Mix::new(u.arbitrary()?);
    let amp = 2f64.powi(u.int_in_range(-4..=4)?);
    let (w, wt) = spec.weights::<T>();
    let map = spec.build(&w, &wt);
    let d = spec.d;
    let mut buf = vec![T::zero(); Stream::<T, _, Scalar>::buffer_len(&map, dv).unwrap()];
    let bytes = {
        let mut s = Stream::new(Scalar, &map, dv, &mut buf).unwrap();
        for _ in 0..tokens {
            let k: Vec<f64> = (0..d).map(|_| mix.grid() * amp).collect();
            let v: Vec<f64> = (0..dv).map(|_| mix.grid() * 4.0).collect();
            s.push(&cast::<T>(&k), &cast::<T>(&v)).unwrap();
        }
        snapshot_of(&s)
    };
    let (mutated, bytes) = mutate(u, bytes)?;
    core_restore::<T>(&spec, dv, &bytes, (!mutated).then_some(&buf[..]));
    Ok(())
}

/// Applies up to four byte flips (xor), a cut or an extension, then recomputes the trailing
/// CRC-32 or not. Returns whether anything changed.
fn mutate(u: &mut Unstructured<'_>, mut bytes: Vec<u8>) -> Result<(bool, Vec<u8>)> {
    let orig = bytes.clone();
    for _ in 0..u.int_in_range(0u8..=4)? {
        let at = u.arbitrary::<u16>()? as usize;
        let x = u.arbitrary::<u8>()?;
        // Half the flips land in the 56-byte header, where the checks are.
        let n = bytes.len();
        let i = if u.arbitrary()? {
            at % 56.min(n)
        } else {
            at % n
        };
        bytes[i] ^= x;
    }
    match u.int_in_range(0u8..=7)? {
        0 => bytes.truncate(u.arbitrary::<u16>()? as usize % (bytes.len() + 1)),
        1 => {
            let n = u.int_in_range(1..=16)?;
            bytes.extend(u.bytes(n)?)
        }
        _ => {}
    }
    if u.arbitrary()? && bytes.len() >= 4 {
        let body = bytes.len() - 4;
        let crc = favor_core::crc32(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    Ok((bytes != orig, bytes))
}

/// Checks favor-tensor's restore of `bytes` into a fresh stream of `p` (batch `batch`).
/// `finite`: require finite step outputs — only for f32 precision: in f64 a state reachable
/// from f64 inputs may hold values beyond f32's range, and outputs are narrowed to f32.
fn tensor_restore(
    p: &Performer,
    batch: usize,
    bytes: &[u8],
    genuine: Option<&[f32]>,
    finite: bool,
) {
    let mut s = p.stream(batch).unwrap();
    let before = s.snapshot().expect("snapshot");
    let what = format!("tensor restore of {} bytes", bytes.len());
    let (h, d, dv) = (p.heads(), p.dim(), p.value_dim());
    match s.restore(bytes) {
        Err(e) => {
            assert!(genuine.is_none(), "{what}: genuine snapshot rejected: {e}");
            assert!(
                s.snapshot().expect("snapshot") == before,
                "{what}: rejected, but the state changed"
            );
        }
        Ok(()) => {
            let again = s.snapshot().expect("snapshot");
            if bytes[4..8] == favor_tensor::STREAM_SNAPSHOT_VERSION.to_le_bytes() {
                assert_eq!(again.len(), bytes.len(), "{what}: length");
            }
            let q: Vec<f32> = (0..batch * h * d)
                .map(|i| (i % 5) as f32 * 0.25 - 0.5)
                .collect();
            let k: Vec<f32> = (0..batch * h * d)
                .map(|i| (i % 3) as f32 * 0.5 - 0.5)
                .collect();
            let v = vec![1.0f32; batch * h * dv];
            let tq = TensorView::new([batch, h, 1, d], &q).unwrap();
            let tk = TensorView::new([batch, h, 1, d], &k).unwrap();
            let tv = TensorView::new([batch, h, 1, dv], &v).unwrap();
            let out = s.step(tq, tk, tv).expect("step after restore");
            assert!(
                !finite || out.data().iter().all(|o| o.is_finite()),
                "{what}: a step after restore answers {:?}",
                out.data()
            );
            if let Some(want) = genuine {
                for (a, b) in out.data().iter().zip(want) {
                    assert_eq!(a.to_bits(), b.to_bits(), "{what}: restored stream differs");
                }
            }
        }
    }
}

/// The fixed layer raw bytes are restored into.
fn fixed_performer() -> Performer {
    Performer::builder(2)
        .features(2)
        .causal(true)
        .value_dim(1)
        .backend(Backend::Scalar)
        .parallel(false)
        .seed(1)
        .build()
        .unwrap()
}

fn tensor_raw(bytes: &[u8]) {
    tensor_restore(&fixed_performer(), 1, bytes, None, true);
}

fn tensor_mutated(u: &mut Unstructured<'_>) -> Result<()> {
    let (h, d, m, dv, batch) = (
        size(u, 1, 2)?,
        size(u, 1, 3)?,
        size(u, 1, 4)?,
        size(u, 1, 2)?,
        size(u, 1, 2)?,
    );
    let precision = if u.arbitrary()? {
        Precision::F64
    } else {
        Precision::F32
    };
    let backend = if u.arbitrary()? {
        Backend::Scalar
    } else {
        Backend::Detected
    };
    let p = Performer::builder(d)
        .heads(h)
        .features(m)
        .value_dim(dv)
        .causal(true)
        .precision(precision)
        .backend(backend)
        .parallel(false)
        .seed(u.arbitrary()?)
        .build()
        .unwrap();
    let len = size(u, 0, 6)?;
    let mut mix = Mix::new(u.arbitrary()?);
    let mut s = p.stream(batch).unwrap();
    let mut g = |n: usize| -> Vec<f32> { (0..n).map(|_| mix.grid() as f32).collect() };
    if len > 0 {
        let (q, k, v) = (
            g(batch * h * len * d),
            g(batch * h * len * d),
            g(batch * h * len * dv),
        );
        s.prefill(
            TensorView::new([batch, h, len, d], &q).unwrap(),
            TensorView::new([batch, h, len, d], &k).unwrap(),
            TensorView::new([batch, h, len, dv], &v).unwrap(),
        )
        .unwrap();
    }
    let bytes = s.snapshot().expect("snapshot");
    let (mutated, bytes) = mutate(u, bytes)?;
    // The original stream's answer to the probe step, for an untouched snapshot.
    let q: Vec<f32> = (0..batch * h * d)
        .map(|i| (i % 5) as f32 * 0.25 - 0.5)
        .collect();
    let k: Vec<f32> = (0..batch * h * d)
        .map(|i| (i % 3) as f32 * 0.5 - 0.5)
        .collect();
    let v = vec![1.0f32; batch * h * dv];
    let want = s
        .step(
            TensorView::new([batch, h, 1, d], &q).unwrap(),
            TensorView::new([batch, h, 1, d], &k).unwrap(),
            TensorView::new([batch, h, 1, dv], &v).unwrap(),
        )
        .unwrap();
    tensor_restore(
        &p,
        batch,
        &bytes,
        (!mutated).then_some(want.data()),
        precision == Precision::F32,
    );
    Ok(())
}
