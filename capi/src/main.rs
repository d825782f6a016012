//! `tstate-capi`: builds the facades' C libraries and installs them.
//!
//! ```text
//! cargo run -p tstate-capi -- install --prefix DIR [--libdir DIR] [--includedir DIR]
//!                                     [--facade DESIGN]... [--debug]
//! cargo run -p tstate-capi -- build [--facade DESIGN]... [--debug]
//! ```
//! Without `--facade`, all four (ensure, handle, activate, guard).
//! `build` prints where the artifacts are; `install` prints every file
//! written. Exit code 2 on a usage error, 1 when a build or an install
//! fails.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(tstate_capi::run_cli(std::env::args().skip(1)))
}
