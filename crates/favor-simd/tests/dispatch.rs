//! `Detected::dispatch` runs an operation on the very backend `Detected` forwards to, so the
//! two give the same bits; only the number of `match`es differs.

use favor_core::*;
use favor_simd::{Detected, WithKernels};

/// Causal attention through the chunked path: every kernel of the trait is exercised.
struct Causal<'a> {
    fm: &'a PositiveSoftmax<'a, f32>,
    x: &'a [f32],
    shape: Shape,
}

impl WithKernels<f32> for Causal<'_> {
    type Output = (Vec<f32>, &'static str);
    fn with_kernels<K: Kernels<f32>>(self, k: &K) -> Self::Output {
        let opts = Options {
            block: 16,
            ..Options::default()
        };
        let plan = Plan::new(PlanKind::CausalChunked, *k, self.fm, self.shape, opts).unwrap();
        let mut scratch = vec![0f32; plan.scratch_len()];
        let mut out = vec![0f32; self.x.len()];
        let x = self.x;
        plan.run(x, x, x, &mut out, &mut scratch).unwrap();
        (out, k.name())
    }
}

#[test]
fn dispatch_equals_forwarding_bit_for_bit() {
    let (l, d, m) = (70, 16, 64);
    let mut w = vec![0f32; m * d];
    projection(ProjectionKind::default(), 3, m, d, &mut w).unwrap();
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let x: Vec<f32> = (0..l * d)
        .map(|i| ((i * 7919) % 101) as f32 / 150.0 - 0.33)
        .collect();
    let shape = Shape::new(l, d, d);
    let backend = Detected::new();
    let op = || Causal {
        fm: &fm,
        x: &x,
        shape,
    };
    let (dispatched, name) = backend.dispatch(op());
    let (forwarded, _) = op().with_kernels(&backend);
    assert_eq!(name, Kernels::<f32>::name(&backend));
    assert_eq!(dispatched, forwarded);
    // And a forced scalar backend dispatches to favor-core's Scalar itself.
    let (scalar, name) = Detected::Scalar(Scalar).dispatch(op());
    assert_eq!(name, "scalar");
    assert_eq!(scalar, op().with_kernels(&Scalar).0);
}
