//! Unit tests: every operation on every kind of map, in both precisions.

use favor_testkit::mapped::*;
use favor_testkit::maps::MapKind;
use favor_testkit::maps::MapSpec;

fn case(kind: MapKind, f64: bool) -> MappedCase {
    use MappedOp::*;
    let (d, m) = (6, 10);
    let mut w = vec![0f64; m * d];
    favor_core::projection(favor_core::ProjectionKind::Iid, 3, m, d, &mut w).unwrap();
    MappedCase {
        f64,
        map: MapSpec {
            kind,
            normalizer: true,
            transposed: true,
            d,
            m,
            eps: 1e-3,
            w: w.iter().map(|&x| f64::from(x as f32)).collect(),
        },
        dv: 3,
        streams: 4,
        seed: 11,
        scale: 0,
        ops: vec![
            Mapped {
                tokens: 3,
                pattern: 7,
                copy: false,
            },
            Snapshot { stream: 1, slot: 0 },
            Step { stream: 1 },
            Mapped {
                tokens: 7,
                pattern: 99,
                copy: true,
            },
            BadStep {
                what: 4,
                stream: 2,
                at: 5,
            },
            BadStep {
                what: 5,
                stream: 1,
                at: 2,
            },
            BadNew {
                what: 1,
                at: 13,
                inf: false,
            },
            Restore { stream: 3, slot: 0 },
            Huge {
                tokens: 2,
                pattern: 5,
                exp: 200,
            },
            Mapped {
                tokens: 1,
                pattern: 3,
                copy: false,
            },
            Reset { stream: 0 },
        ],
    }
}

#[test]
fn every_operation_on_both_precisions() {
    for kind in [
        MapKind::Positive,
        MapKind::Hyperbolic,
        MapKind::Trig,
        MapKind::Generalized {
            act: favor_testkit::maps::GenAct::Relu,
            projection: true,
        },
    ] {
        run_case(&case(kind, false));
        run_case(&case(kind, true));
    }
}
