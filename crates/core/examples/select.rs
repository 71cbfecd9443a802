//! Prints the selection sequence and each server's share for weights given as
//! `name=weight` arguments (default `a=3 b=2 c=1`).
use roundrobin_core::RoundRobin;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let specs = if args.is_empty() {
        vec!["a=3".into(), "b=2".into(), "c=1".into()]
    } else {
        args
    };
    let rr: RoundRobin<String> = RoundRobin::new();
    for spec in &specs {
        let (name, w) = spec.split_once('=').unwrap_or((spec, "1"));
        let w: u32 = w.parse().unwrap_or_else(|_| {
            eprintln!("bad weight in `{spec}`");
            std::process::exit(2)
        });
        rr.upsert_server(name.to_string(), Some(w)).unwrap();
    }
    let seq: Vec<String> = (0..20).map(|_| rr.next_server().unwrap()).collect();
    println!("sequence: {}", seq.join(" "));
}
