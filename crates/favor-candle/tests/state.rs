//! The owned decode state against causal attention over the whole sequence.

use candle_core::{DType, Tensor};
use favor_candle::{Performer, PerformerAttention};

use crate::common::{data, input, max_diff};

const H: usize = 4;
const D: usize = 16;

fn causal_hybrid() -> PerformerAttention {
    let p = Performer::builder(D)
        .heads(H)
        .features(32)
        .causal(true)
        .window(6)
        .sinks(1)
        .seed(5);
    PerformerAttention::new(p.build().unwrap())
}

fn token(t: &Tensor, i: usize) -> Tensor {
    t.narrow(1, i, 1).unwrap()
}

#[test]
fn steps_equal_causal_attention_over_the_sequence() {
    let attn = causal_hybrid();
    let l = 40;
    let (q, k, v) = (
        input([1, l, H, D], 0.0, 0.5),
        input([1, l, H, D], 1.0, 0.5),
        input([1, l, H, D], 2.0, 1.0),
    );
    let whole = data(&attn.forward(&q, &k, &v).unwrap());
    let mut state = attn.decode_state(1).unwrap();
    let mut steps = Vec::new();
    for i in 0..l {
        let out = state
            .step(&token(&q, i), &token(&k, i), &token(&v, i))
            .unwrap();
        assert_eq!(out.dims(), &[1, 1, H, D]);
        steps.extend(data(&out));
    }
    assert_eq!(state.tokens(), l as u64);
    // Same sums in another order: f32 rounding only.
    assert!(
        max_diff(&steps, &whole) < 1e-5,
        "{}",
        max_diff(&steps, &whole)
    );
}

#[test]
fn prefill_then_steps_and_snapshots() {
    let attn = causal_hybrid();
    let l = 30;
    let (q, k, v) = (
        input([2, l, H, D], 0.0, 0.5),
        input([2, l, H, D], 1.0, 0.5),
        input([2, l, H, D], 2.0, 1.0),
    );
    let whole = attn.forward(&q, &k, &v).unwrap();
    let mut state = attn.decode_state(2).unwrap();
    let head = |t: &Tensor| t.narrow(1, 0, 20).unwrap();
    let pre = state.prefill(&head(&q), &head(&k), &head(&v)).unwrap();
    assert_eq!(pre.dims(), &[2, 20, H, D]);
    assert!(max_diff(&data(&pre), &data(&head(&whole))) < 1e-5);
    let memory = state.memory_bytes();
    let snapshot = state.snapshot().unwrap();
    let run = |state: &mut favor_candle::DecodeState| -> Vec<f32> {
        (20..l)
            .flat_map(|i| {
                data(
                    &state
                        .step(&token(&q, i), &token(&k, i), &token(&v, i))
                        .unwrap(),
                )
            })
            .collect()
    };
    let first = run(&mut state);
    assert_eq!(state.memory_bytes(), memory, "the state does not grow");
    state.restore(&snapshot).unwrap();
    assert_eq!(state.tokens(), 20);
    assert_eq!(
        run(&mut state),
        first,
        "a restored state continues bit for bit"
    );
    assert!(state.restore(&snapshot[..snapshot.len() - 1]).is_err());
    assert_eq!(
        state.tokens(),
        l as u64,
        "a refused snapshot leaves the state as it was"
    );
}

#[test]
fn other_dtypes_step_in_their_dtype() {
    let attn = causal_hybrid();
    let mut state = attn.decode_state(1).unwrap();
    let x = input([1, 1, H, D], 0.0, 0.5).to_dtype(DType::BF16).unwrap();
    let out = state.step(&x, &x, &x).unwrap();
    assert_eq!((out.dims(), out.dtype()), (&[1, 1, H, D][..], DType::BF16));
}

#[test]
fn misuse_is_an_error() {
    let bidirectional = PerformerAttention::new(Performer::builder(D).heads(H).build().unwrap());
    assert!(
        bidirectional
            .decode_state(1)
            .unwrap_err()
            .to_string()
            .contains("causal")
    );
    let mut state = causal_hybrid().decode_state(1).unwrap();
    let two = input([1, 2, H, D], 0.0, 0.5);
    assert!(
        state
            .step(&two, &two, &two)
            .unwrap_err()
            .to_string()
            .contains("one token")
    );
    let wrong_batch = input([2, 1, H, D], 0.0, 0.5);
    assert!(
        state
            .step(&wrong_batch, &wrong_batch, &wrong_batch)
            .is_err()
    );
    assert_eq!(state.tokens(), 0);
}
