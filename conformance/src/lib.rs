//! # tstate-conformance — one suite over every facade, and the comparison
//!
//! [`facade::Facade`] is implemented for each facade by calling its
//! exported C functions. [`cases`] is the one list of cases (a macro,
//! [`for_each_case!`], instantiates it per facade, so no facade can skip a
//! case silently). The `tstate-compare` binary runs the suite against all
//! facades and prints the matrix, the boilerplate counts and a timing table.

pub mod bench;
pub mod boilerplate;
pub mod capi;
pub mod cases;
pub mod child;
pub mod exitrace;
pub mod facade;
pub mod gilstate;
pub mod observed;
pub mod pythons;
pub mod report;
pub mod runner;
pub mod soak;
pub mod wheel;
