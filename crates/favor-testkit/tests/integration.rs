//! favor-testkit's tests, one binary: `replay` runs every fuzz target's oracle on the
//! committed inputs, `unit` holds the oracles' own tests. The library itself has none (`[lib]
//! test = false`): a unit-test harness would compile the whole crate a second time.

mod replay;

mod unit {
    mod bounds;
    mod calibrated;
    mod hybrid;
    mod hybrid_paths;
    mod input;
    mod lipschitz;
    mod mapped;
    mod reference;
    mod tensor_stream;
}
