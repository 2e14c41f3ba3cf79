//! Every kernels backend this CPU can run, behind one visitor (a closure cannot be generic).

use core::marker::PhantomData;

use favor_core::{Float, Kernels};

/// Something to run once per backend.
pub trait Visit {
    /// Runs on backend `k`.
    fn visit<K: Kernels<f32> + Kernels<f64>>(&mut self, k: K);
}

/// Something to run once per backend, in one float type.
pub trait VisitT<T: Float> {
    /// Runs on backend `k`.
    fn visit<K: Kernels<T>>(&mut self, k: K);
}

/// Adapts a [`VisitT`] for `f32` or `f64` to [`Visit`].
pub struct Typed<'a, T, V>(pub &'a mut V, pub PhantomData<T>);

impl<V: VisitT<f32>> Visit for Typed<'_, f32, V> {
    fn visit<K: Kernels<f32> + Kernels<f64>>(&mut self, k: K) {
        self.0.visit(k);
    }
}

impl<V: VisitT<f64>> Visit for Typed<'_, f64, V> {
    fn visit<K: Kernels<f32> + Kernels<f64>>(&mut self, k: K) {
        self.0.visit(k);
    }
}

/// Runs `v` on every SIMD backend available here — pulp's one-lane `Portable` always, AVX2+FMA
/// and AVX-512 on x86-64 CPUs that have them, NEON on AArch64 — and on `Detected` (its
/// dispatch is code of its own). The scalar reference is not included: it is the oracle.
pub fn each_simd<V: Visit>(v: &mut V) {
    v.visit(favor_simd::Portable::new());
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if let Some(k) = favor_simd::Avx2::new() {
        v.visit(k);
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if let Some(k) = favor_simd::Avx512::new() {
        v.visit(k);
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = favor_simd::Neon::new() {
        v.visit(k);
    }
    v.visit(favor_simd::Detected::new());
}

/// Runs `v` on the backend number `i` of [`Scalar`](favor_core::Scalar) followed by
/// [`each_simd`]'s list (modulo its length), so an input can pick one.
pub fn nth<V: Visit>(i: usize, v: &mut V) {
    struct Pick<'a, V> {
        target: usize,
        at: usize,
        inner: &'a mut V,
    }
    impl<V: Visit> Visit for Pick<'_, V> {
        fn visit<K: Kernels<f32> + Kernels<f64>>(&mut self, k: K) {
            if self.at == self.target {
                self.inner.visit(k);
            }
            self.at += 1;
        }
    }
    let n = count();
    let mut p = Pick {
        target: i % n,
        at: 0,
        inner: v,
    };
    p.visit(favor_core::Scalar);
    each_simd(&mut p);
}

/// Number of backends [`nth`] chooses from (Scalar included).
pub fn count() -> usize {
    struct Count(usize);
    impl Visit for Count {
        fn visit<K: Kernels<f32> + Kernels<f64>>(&mut self, _: K) {
            self.0 += 1;
        }
    }
    let mut c = Count(1);
    each_simd(&mut c);
    c.0
}
