//! The conformance suite under `cargo test`: every case of the one list,
//! for every facade, each a test of its own (run one at a time: the facades
//! share one process-wide runtime).

use tstate_conformance::facade::{Activate, Ensure, Guard, Handle};
use tstate_conformance::runner::{Case, Outcome, run_case};
use tstate_conformance::{cases, for_each_case};

fn verdict(facade: &str, name: &str, o: Outcome) {
    match o {
        Outcome::Pass => {}
        Outcome::NotApplicable(why) => eprintln!("{facade}/{name}: n/a — {why}"),
        Outcome::Fail(m) => panic!("{facade}/{name}: FAIL — {m}"),
    }
}

macro_rules! suite {
    ($module:ident, $facade:ty; $($case:ident),* $(,)?) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $case() {
                    let case = Case { name: stringify!($case), run: cases::$case::<$facade> };
                    verdict(stringify!($module), case.name, run_case::<$facade>(&case));
                }
            )*
        }
    };
}

for_each_case!(suite!(ensure, Ensure));
for_each_case!(suite!(handle, Handle));
for_each_case!(suite!(activate, Activate));
for_each_case!(suite!(guard, Guard));
