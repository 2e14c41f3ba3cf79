//! Unit tests of the target's oracle.

use favor_tensor::{Kernel, Precision};
use favor_testkit::tensor_stream::*;

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
            run_case(&small_case(kernel, precision, every_op()));
        }
    }
}

/// The oracles fire: a stream fed one token more than its history (as if a rejected call
/// had been absorbed) is caught by the twin comparison.
#[test]
#[should_panic(expected = "stream vs twin")]
fn a_state_change_is_caught() {
    oracle_catches_a_state_change();
}
