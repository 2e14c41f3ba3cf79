//! Runs one input file through one target's check, outside libFuzzer (stable, with a normal
//! backtrace): `cargo run -p favor-testkit --example replay_one -- <target> <file>`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, file] = &args[..] else {
        eprintln!("usage: replay_one <target> <file>");
        std::process::exit(2);
    };
    let Some((_, check)) = favor_testkit::TARGETS
        .iter()
        .find(|(name, _)| name == target)
    else {
        eprintln!("unknown target {target}");
        std::process::exit(2);
    };
    check(&std::fs::read(file).expect("readable input"));
    println!("{target} {file}: ok");
}
