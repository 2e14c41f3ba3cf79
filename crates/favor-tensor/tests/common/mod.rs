//! Helpers shared by favor-tensor's integration tests.

/// Deterministic pseudo-random values in [-scale, scale).
pub fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Asserts that every (batch, head) of `out` is what `plan` computes on that head of the
/// `[batch, heads, L, d]` inputs: favor-core's own entry point as the oracle, same bits.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn assert_heads_equal_plan<F: favor_core::FeatureMap<f32>>(
    out: &favor_tensor::Tensor,
    (q, k, v): (
        favor_tensor::TensorView<'_>,
        favor_tensor::TensorView<'_>,
        favor_tensor::TensorView<'_>,
    ),
    plan: &favor_core::Plan<'_, f32, favor_core::Scalar, F>,
    what: &str,
) {
    let [batch, heads, _, _] = q.shape();
    let n = plan.shape().queries * plan.shape().value_dim;
    for b in 0..batch {
        for h in 0..heads {
            let mut o = vec![0f32; n];
            let mut scratch = vec![0.0; plan.scratch_len()];
            plan.run(
                q.head(b, h),
                k.head(b, h),
                v.head(b, h),
                &mut o,
                &mut scratch,
            )
            .unwrap();
            assert_eq!(out.head(b, h), &o[..], "{what}, head ({b}, {h})");
        }
    }
}
