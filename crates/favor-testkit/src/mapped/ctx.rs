//! The checking context: fresh tokens, applying a batch of mapped tokens, and the oracles.

use super::*;

impl Ctx<'_> {
    /// `n` grid values times `a`, exact in f32 and f64.
    pub(super) fn tokens(&mut self, n: usize, a: f64) -> Vec<f64> {
        (0..n)
            .map(|_| f64::from((self.mix.grid() * a) as f32))
            .collect()
    }

    /// Maps the `batch` through `fm` and applies its tokens to streams chosen by `pattern`,
    /// each also stepped into its twin with plain `step` (see [`Batch::huge`] for tokens that
    /// may be refused).
    pub(super) fn apply<'w, T: Real, K: Kernels<T>>(
        &mut self,
        kern: &K,
        fm: &Map<'w, T>,
        streams: &mut Streams<'_, 'w, T, K>,
        batch: &Batch,
        pattern: u32,
        what: &str,
    ) {
        let (nt, q, k, huge) = (batch.n, &batch.q[..], &batch.k[..], batch.huge);
        let (d, dv, n) = (self.c.map.d, self.c.dv, streams.main.len());
        let (qt, kt) = (cast::<T>(q), cast::<T>(k));
        let mut scratch = vec![T::zero(); mapped_tokens_len(fm, nt).expect("len")];
        let mapped = match MappedTokens::new(kern, fm, nt, &qt, &kt, &mut scratch) {
            Ok(m) => m,
            Err(e) if huge => {
                assert!(
                    matches!(e, favor_core::Error::OutOfRange { .. }),
                    "{what}: finite tokens refused with {e:?}"
                );
                return;
            }
            Err(e) => panic!("{what}: valid tokens refused: {e}"),
        };
        assert_eq!(mapped.len(), nt, "{what}: len()");
        let mut pm = Mix::new(u64::from(pattern));
        let start = (pm.next_u64() as usize) % n;
        for s in 0..n {
            let j = (start + s) % n;
            if pm.next_u64().is_multiple_of(4) || streams.models[j].k.len() / d >= MAX_TOKENS {
                continue;
            }
            let i = (pm.next_u64() as usize) % nt;
            let v = self.tokens(dv, 4.0);
            let vt = cast::<T>(&v);
            let (qi, ki) = (&qt[i * d..(i + 1) * d], &kt[i * d..(i + 1) * d]);
            let mut out = vec![T::zero(); dv];
            let mut out_t = vec![T::zero(); dv];
            let at = format!("{what} token {i} on stream {j}");
            match streams.main[j].step_mapped(&mapped, i, &vt, &mut out) {
                Ok(()) => {}
                // Huge features: the sums over the keys would leave the supported range. The
                // twin's step checks the same range and must refuse too; neither changed.
                Err(e @ favor_core::Error::OutOfRange { .. }) if huge => {
                    let rt = streams.twin[j].step(qi, ki, &vt, &mut out_t);
                    assert!(
                        matches!(rt, Err(favor_core::Error::OutOfRange { .. })),
                        "{at}: step_mapped refused ({e}), step gave {rt:?}"
                    );
                    continue;
                }
                Err(e) => panic!("{at}: step_mapped: {e}"),
            }
            let rt = streams.twin[j].step(qi, ki, &vt, &mut out_t);
            match rt {
                Ok(()) => {}
                // Mapped with 2·nt rows, the row's features may round differently on a SIMD
                // backend right at the overflow edge; on Scalar the mapping is the same.
                Err(e) if huge && !self.scalar => {
                    assert!(
                        matches!(e, favor_core::Error::OutOfRange { .. }),
                        "{at}: {e:?}"
                    );
                    // The twins part ways: restart both so later comparisons stay meaningful.
                    streams.reset(j);
                    continue;
                }
                Err(e) => panic!("{at}: step refuses what step_mapped took: {e}"),
            }
            let model = &mut streams.models[j];
            model.q.extend(&q[i * d..(i + 1) * d]);
            model.k.extend(&k[i * d..(i + 1) * d]);
            model.v.extend(&v);
            model.known &= !huge;
            self.check(model, &q[i * d..(i + 1) * d], &out, &out_t, &at);
        }
    }

    /// Checks a stream's output `out` for query `q` against its twin's `out_t` and against the
    /// f64 reference over the model's history.
    pub(super) fn check<T: Real>(
        &self,
        model: &Model,
        q: &[f64],
        out: &[T],
        out_t: &[T],
        what: &str,
    ) {
        if self.scalar {
            for (c, (a, b)) in out.iter().zip(out_t).enumerate() {
                assert!(
                    a.bits() == b.bits(),
                    "{what}: out[{c}] = {:e}, step gives {:e}: not bit-identical",
                    a.to64(),
                    b.to64()
                );
            }
        }
        if !model.known {
            return;
        }
        let spec = &self.c.map;
        if self.positive {
            for (c, (a, b)) in out.iter().zip(out_t).enumerate() {
                assert!(
                    a.is_finite() && b.is_finite(),
                    "{what}: out[{c}] = {:e} (step: {:e}): a positive map's output is not finite",
                    a.to64(),
                    b.to64()
                );
            }
        }
        if !spec.kind.positive_softmax() {
            return;
        }
        let dv = self.c.dv;
        let r = favor_reference(
            &explicit(spec, q),
            &explicit(spec, &model.k),
            &model.v,
            dv,
            &RefOpts {
                causal: false,
                key_mask: None,
                normalized: true,
                u: 2.0 * unit::<T>() + unit::<f64>(),
                tiny: T::min_positive_value().to64(),
            },
        );
        for c in 0..dv {
            let (o, want, tol) = (out[c].to64(), r.out[c], r.tol[c]);
            let err = (o - want).abs();
            assert!(
                err <= tol,
                "{what}: out[{c}] = {o:e}, naive f64 FAVOR+ over {} tokens {want:e}, |err| {err:e} > {tol:e}",
                model.k.len() / spec.d
            );
        }
        if !self.scalar && r.tol.iter().all(|t| t.is_finite()) {
            // The `attention` target's bound (scores of M features: γ_{2M}) over the
            // stream's history. It holds while the stabilised denominator stays in the normal
            // range, which the f64 oracle's finite bound makes sure of.
            let bound = backend_bound(
                &spec.w,
                (spec.d, spec.scale()),
                &model.q,
                &model.k,
                2 * spec.features(),
                max_abs(&model.v),
                unit::<T>(),
            );
            for (c, (a, b)) in out.iter().zip(out_t).enumerate() {
                let gap = (a.to64() - b.to64()).abs();
                assert!(
                    gap <= bound,
                    "{what}: out[{c}] = {:e}, step gives {:e}: |diff| {gap:e} > bound {bound:e}",
                    a.to64(),
                    b.to64()
                );
            }
        }
    }
}
