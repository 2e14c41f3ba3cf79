//! Unit tests of `favor_cli::args`.

use favor_cli::args::*;

/// Flags of every kind the commands use.
#[derive(Debug, clap::Args)]
struct Flags {
    #[arg(long)]
    q: Option<String>,
    #[arg(long)]
    causal: bool,
    #[arg(long)]
    features: Option<usize>,
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Set)]
    m: Option<Vec<usize>>,
    #[arg(long)]
    out: Option<String>,
}

fn args(s: &str) -> Args {
    Args::new(s.split_whitespace().map(String::from))
}

#[test]
fn values_flags_and_leftovers() {
    let f: Flags = args("--q a.npy --causal --features=128 --m 7 --m 1,2,3 --features 64")
        .parse("t")
        .unwrap();
    assert_eq!(f.q.as_deref(), Some("a.npy"));
    assert!(f.causal);
    assert_eq!(f.features, Some(64), "the last one wins");
    assert_eq!(f.m, Some(vec![1, 2, 3]));
    assert_eq!(f.out, None);
}

#[test]
fn errors_are_usage_errors() {
    for bad in ["--features x", "--q", "--oops 1", "stray"] {
        let e = args(bad).parse::<Flags>("t").unwrap_err();
        assert_eq!(e.code, 2, "{bad}");
        assert!(!e.message.contains('\n'), "{bad}: {}", e.message);
    }
    let e = args("--oops 1").parse::<Flags>("t").unwrap_err();
    assert!(e.message.contains("--oops"), "{}", e.message);
    let e = args("--features x").parse::<Flags>("t").unwrap_err();
    assert!(e.message.contains("--features"), "{}", e.message);
    #[derive(Debug, clap::Args)]
    struct Required {
        #[arg(long)]
        out: String,
    }
    let e = args("").parse::<Required>("t").unwrap_err();
    assert_eq!(e.code, 2);
    assert!(e.message.contains("--out"), "{}", e.message);
}
