//! Quick probe: cost of nested ensure/release through the core's Rust API.
use std::hint::black_box;
use std::time::Instant;
use tstate_core::Runtime;

fn main() {
    let rt = Runtime::new();
    let main = rt.main_interpreter().unwrap();
    let t = rt.ensure(main).unwrap();
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    for _ in 0..3 {
        let t0 = Instant::now();
        for _ in 0..n {
            let x = rt.ensure(black_box(main)).unwrap();
            rt.release_ticket(black_box(x)).unwrap();
        }
        println!(
            "ticket nested pair: {:.1} ns",
            t0.elapsed().as_nanos() as f64 / n as f64
        );
        let t0 = Instant::now();
        for _ in 0..n {
            rt.ensure(black_box(main)).unwrap();
            rt.release().unwrap();
        }
        println!(
            "stored nested pair: {:.1} ns",
            t0.elapsed().as_nanos() as f64 / n as f64
        );
        let t0 = Instant::now();
        for _ in 0..n {
            black_box(rt.is_attached(black_box(main)));
        }
        println!(
            "is_attached: {:.1} ns",
            t0.elapsed().as_nanos() as f64 / n as f64
        );
    }
    rt.release_ticket(t).unwrap();
}
