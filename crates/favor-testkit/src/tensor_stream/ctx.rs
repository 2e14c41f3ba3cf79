//! The checking context: the model of the history and the bounds each output must meet.

use super::run::*;
use super::*;

impl<'a> Ctx<'a> {
    pub(super) fn new(c: &'a TensorStreamCase, p: &Performer) -> Self {
        let f64p = c.precision == Precision::F64;
        let (u, tiny, eps_t) = if f64p {
            (3.0 * unit::<f64>(), f64::MIN_POSITIVE, c.epsilon)
        } else {
            (
                2.0 * unit::<f32>() + unit::<f64>(),
                f64::from(f32::MIN_POSITIVE),
                f64::from(c.epsilon as f32),
            )
        };
        let (d, m) = (c.dim, p.features());
        let kind = match c.kernel {
            Kernel::Softmax => MapKind::Positive,
            Kernel::Hyperbolic => MapKind::Hyperbolic,
            Kernel::Trigonometric => MapKind::Trig,
            k => MapKind::Generalized {
                act: match k {
                    Kernel::Relu => GenAct::Relu,
                    Kernel::Abs => GenAct::Abs,
                    Kernel::EluPlusOne => GenAct::EluPlusOne,
                    Kernel::Exp => GenAct::Exp,
                    _ => GenAct::Square,
                },
                projection: c.projection != Projection::None,
            },
        };
        let w: Vec<f64> = if c.projection == Projection::None {
            Vec::new()
        } else if f64p {
            p.projection_f64().to_vec()
        } else {
            p.projection_f32().iter().map(|&x| f64::from(x)).collect()
        };
        let spec = MapSpec {
            kind,
            normalizer: c.normalizer,
            transposed: true,
            d,
            m,
            eps: eps_t,
            w,
        };
        let numeric = if kind.positive_softmax() {
            Numeric::Softmax
        } else if covered(&spec) {
            Numeric::Lipschitz
        } else {
            Numeric::None
        };
        Ctx {
            c,
            spec,
            numeric,
            u,
            tiny,
            narrowed: f64p,
            rows: c.batch * c.heads,
            mix: Mix::new(c.data_seed),
        }
    }

    /// A point of the 8-bit grid {k/128 : −128 ≤ k < 128} times 2^e: exact in every element
    /// type, so all element types feed the same values.
    pub(super) fn value(&mut self, e: i32) -> f64 {
        f64::from((self.mix.next_u64() >> 56) as u8 as i8) / 128.0 * 2f64.powi(e)
    }

    /// A valid call of `len` tokens.
    pub(super) fn call(&mut self, step: bool, len: usize, elem: Elem) -> Call {
        let (r, d, dv) = (self.rows, self.c.dim, self.c.value_dim);
        let (s, vs) = (self.c.scale, self.c.vscale);
        let q = (0..r * len * d).map(|_| self.value(s)).collect();
        let k = (0..r * len * d).map(|_| self.value(s)).collect();
        let v = (0..r * len * dv).map(|_| self.value(vs)).collect();
        let (b, h) = (self.c.batch, self.c.heads);
        Call {
            step,
            into: None,
            elem,
            shapes: [[b, h, len, d], [b, h, len, d], [b, h, len, dv]],
            q,
            k,
            v,
        }
    }

    /// The call's tokens, in history order.
    pub(super) fn tokens_of(&self, call: &Call) -> Vec<Token> {
        let (len, d, dv) = (call.len(), self.c.dim, self.c.value_dim);
        (0..len)
            .map(|t| {
                let mut tok = Token {
                    q: Vec::with_capacity(self.rows * d),
                    k: Vec::with_capacity(self.rows * d),
                    v: Vec::with_capacity(self.rows * dv),
                };
                for i in 0..self.rows {
                    let r = (i * len + t) * d;
                    tok.q.extend(&call.q[r..r + d]);
                    tok.k.extend(&call.k[r..r + d]);
                    let r = (i * len + t) * dv;
                    tok.v.extend(&call.v[r..r + dv]);
                }
                tok
            })
            .collect()
    }

    /// The whole history as one causal call.
    pub(super) fn history_call(&self, tokens: &[Token]) -> Call {
        let (n, d, dv) = (tokens.len(), self.c.dim, self.c.value_dim);
        let (b, h) = (self.c.batch, self.c.heads);
        let gather = |f: fn(&Token) -> &Vec<f64>, w: usize| -> Vec<f64> {
            let mut out = Vec::with_capacity(self.rows * n * w);
            for i in 0..self.rows {
                for t in tokens {
                    out.extend(&f(t)[i * w..(i + 1) * w]);
                }
            }
            out
        };
        Call {
            step: false,
            into: None,
            elem: Elem::F32,
            shapes: [[b, h, n, d], [b, h, n, d], [b, h, n, dv]],
            q: gather(|t| &t.q, d),
            k: gather(|t| &t.k, d),
            v: gather(|t| &t.v, dv),
        }
    }

    /// A call that must succeed (on a known state): run it on the stream and its twin, log
    /// it for the slots whose line it continues, and check its outputs.
    pub(super) fn good_call(
        &self,
        call: &Call,
        twins: &mut Twins,
        model: &mut Model,
        slots: &mut [Option<Slot>; 4],
        fwd: &mut Performer,
        what: &str,
    ) {
        let r = call.exec(&mut twins.main);
        let rt = call.exec(&mut twins.twin);
        let out = match (r, rt) {
            (Ok(a), Ok(b)) => {
                same_bits(&a, &b, &format!("{what}: stream vs twin"));
                a
            }
            (Err(a), Err(b)) if !model.known => {
                // An accepted corrupted snapshot may hold a token count the next call
                // overflows: then both refuse, alike.
                assert_eq!(a, b, "{what}: stream and twin refuse differently");
                twins.unchanged(what);
                return;
            }
            (a, b) => panic!("{what}: stream {a:?}, twin {b:?}"),
        };
        for s in slots.iter_mut().flatten().filter(|s| s.live) {
            s.log.push(Logged {
                call: call.clone(),
                out: out.clone(),
            });
        }
        if !model.known {
            return;
        }
        let n0 = model.tokens.len();
        model.tokens.extend(self.tokens_of(call));
        self.check(call, &out, n0, model, fwd, what);
    }

    /// Oracles (a) and (d) for the outputs `out` of `call`, whose tokens sit at positions
    /// `n0..` of the model's history.
    pub(super) fn check(
        &self,
        call: &Call,
        out: &[f32],
        n0: usize,
        model: &Model,
        fwd: &mut Performer,
        what: &str,
    ) {
        let (len, d, dv) = (call.len(), self.c.dim, self.c.value_dim);
        let n = model.tokens.len();
        let full = self
            .history_call(&model.tokens)
            .forward(fwd)
            .unwrap_or_else(|e| panic!("{what}: causal forward over the history: {e}"));
        if !call.step && n0 == 0 {
            for i in 0..self.rows {
                same_bits(
                    &out[i * len * dv..(i + 1) * len * dv],
                    &full[i * n * dv..(i + 1) * n * dv],
                    &format!("{what}: prefill from empty vs causal forward, head {i}"),
                );
            }
        }
        let finite = self.c.kernel != Kernel::Trigonometric;
        for i in 0..self.rows {
            let keys: Vec<f64> = model
                .tokens
                .iter()
                .flat_map(|t| t.k[i * d..(i + 1) * d].iter().copied())
                .collect();
            let values: Vec<f64> = model
                .tokens
                .iter()
                .flat_map(|t| t.v[i * dv..(i + 1) * dv].iter().copied())
                .collect();
            let ke = matches!(self.numeric, Numeric::Softmax).then(|| explicit(&self.spec, &keys));
            let kl = matches!(self.numeric, Numeric::Lipschitz)
                .then(|| lip_features(&self.spec, &keys, self.u));
            for t in 0..len {
                let pos = n0 + t;
                let qrow = &model.tokens[pos].q[i * d..(i + 1) * d];
                let (want, tol) = if let Some(ke) = &ke {
                    let mask: Vec<bool> = (0..n).map(|j| j <= pos).collect();
                    let r = favor_reference(
                        &explicit(&self.spec, qrow),
                        ke,
                        &values,
                        dv,
                        &RefOpts {
                            causal: false,
                            key_mask: Some(&mask),
                            normalized: true,
                            u: self.u,
                            tiny: self.tiny,
                        },
                    );
                    (r.out, r.tol)
                } else if let Some(kl) = &kl {
                    let ql = lip_features(&self.spec, qrow, self.u);
                    lip_reference(&ql, 0, kl, pos + 1, &values, dv, self.u)
                } else {
                    (Vec::new(), Vec::new())
                };
                for col in 0..dv {
                    let o = out[(i * len + t) * dv + col];
                    let f = full[(i * n + pos) * dv + col];
                    let at = format!(
                        "{what}: batch {} head {} token {pos} column {col}",
                        i / self.c.heads,
                        i % self.c.heads
                    );
                    if finite {
                        assert!(
                            o.is_finite() && f.is_finite(),
                            "{at}: stream {o:e}, forward {f:e}: not finite"
                        );
                    }
                    if want.is_empty() {
                        continue;
                    }
                    let (w, mut tol) = (want[col], tol[col]);
                    if self.narrowed {
                        // The f64 result rounded to the f32 output: ≤ u_f32 relative in the
                        // normal range, ≤ half the smallest subnormal below it.
                        tol += unit::<f32>() * (w.abs() + tol) + 2f64.powi(-150);
                    }
                    for (name, x) in [("stream", o), ("causal forward", f)] {
                        let err = (f64::from(x) - w).abs();
                        assert!(
                            x.is_finite() && err <= tol,
                            "{at}: {name} {x:e}, naive f64 reference {w:e}, |err| {err:e} > bound {tol:e}"
                        );
                    }
                    let gap = (f64::from(o) - f64::from(f)).abs();
                    assert!(
                        gap <= 2.0 * tol,
                        "{at}: stream {o:e} vs causal forward {f:e}: {gap:e} > {:e}",
                        2.0 * tol
                    );
                }
            }
        }
    }
}
