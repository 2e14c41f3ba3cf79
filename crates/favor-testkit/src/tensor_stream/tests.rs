//! Unit tests of the target's oracle.

use super::*;

fn case(kernel: Kernel, precision: Precision, ops: Vec<TensorOp>) -> TensorStreamCase {
    TensorStreamCase {
        heads: 2,
        batch: 2,
        dim: 5,
        features: 12,
        value_dim: 3,
        kernel,
        projection: Projection::default(),
        normalizer: kernel.is_softmax(),
        epsilon: 1e-3,
        chunk: 3,
        precision,
        backend: Backend::Detected,
        parallel: false,
        seed: 4,
        data_seed: 9,
        scale: 0,
        vscale: 1,
        ops,
    }
}

fn every_op() -> Vec<TensorOp> {
    use TensorOp::*;
    vec![
        Prefill {
            len: 4,
            elem: Elem::F16,
        },
        Snapshot { slot: 0 },
        Step {
            elem: Elem::F32,
            into: true,
        },
        Prefill {
            len: 2,
            elem: Elem::Bf16,
        },
        NonFinite {
            prefill: true,
            len: 3,
            which: Which::K,
            at: 77,
            inf: false,
            elem: Elem::F64,
        },
        Shape {
            prefill: true,
            len: 2,
            which: Which::Q,
            dim: 2,
            grow: true,
        },
        OutOfRange {
            prefill: false,
            len: 0,
            which: Which::V,
            at: 3,
        },
        WrongOut { longer: false },
        Foreign { which: 3 },
        Truncate {
            slot: 0,
            keep: 50,
            extend: false,
        },
        RoundTrip,
        Restore {
            slot: 0,
            replay: 0,
            fresh: true,
        },
        Step {
            elem: Elem::F64,
            into: false,
        },
        Reset,
        Prefill {
            len: 7,
            elem: Elem::F32,
        },
    ]
}

#[test]
fn every_operation_on_every_numeric_oracle() {
    for kernel in [
        Kernel::Softmax,
        Kernel::Hyperbolic,
        Kernel::Relu,
        Kernel::Trigonometric,
    ] {
        for precision in [Precision::F32, Precision::F64] {
            run_case(&case(kernel, precision, every_op()));
        }
    }
}

/// The oracles fire: a stream fed one token more than its history (as if a rejected call
/// had been absorbed) is caught by the twin comparison.
#[test]
#[should_panic(expected = "stream vs twin")]
fn a_state_change_is_caught() {
    let c = case(Kernel::Softmax, Precision::F32, Vec::new());
    let p = c.builder().build().unwrap();
    let twin_p = c.builder().parallel(true).build().unwrap();
    let mut fwd = p.clone();
    let mut cx = Ctx::new(&c, &p);
    let mut twins = Twins {
        main: p.stream(2).unwrap(),
        twin: twin_p.stream(2).unwrap(),
    };
    let mut model = Model::empty();
    let mut slots: [Option<Slot>; 4] = Default::default();
    let extra = cx.call(true, 1, Elem::F32);
    extra.exec(&mut twins.main).unwrap();
    let call = cx.call(true, 1, Elem::F32);
    cx.good_call(&call, &mut twins, &mut model, &mut slots, &mut fwd, "test");
}
