//! The bounded soak under `cargo test` (its own process, so the runtime's
//! end-of-run counts are this soak's alone). 8 threads × 15 s by default;
//! `TSTATE_SOAK_SECS` changes the duration.

use std::time::Duration;
use tstate_conformance::soak::{SoakConfig, SoakReport, soak};

#[test]
fn finalization_stress_soak_8_threads() {
    let secs = std::env::var("TSTATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let r = soak(SoakConfig {
        duration: Duration::from_secs(secs),
        ..SoakConfig::default()
    });
    eprintln!("{r:?}");
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    assert!(r.operations > 10_000, "the soak did too little: {r:?}");
    assert!(r.finalizations > 10, "too few finalizations: {r:?}");
    assert!(
        r.refused_finalizing + r.refused_gone > 0,
        "no refusal was exercised: {r:?}"
    );
    assert_eq!(SoakReport::thread_states_left(), 0);
}
