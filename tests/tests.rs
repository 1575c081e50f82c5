//! milan's integration tests: one binary, shared helpers in `util`.
//!
//! The engine's modules run with any features (`cargo test --no-default-features` tests the
//! engine alone); the rest need the features they drive, the command line above all.

mod api;
mod engine;
mod persistence;
mod scale;
mod util;

#[cfg(feature = "cli")]
mod bad_input;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod duplicates;
#[cfg(feature = "cli")]
mod extract;
#[cfg(feature = "cli")]
mod files;
#[cfg(feature = "cli")]
mod fp16;
#[cfg(feature = "cli")]
mod images;
#[cfg(feature = "cli")]
mod import;
#[cfg(feature = "cli")]
mod keys;
#[cfg(feature = "cli")]
mod processes;
#[cfg(feature = "cli")]
mod shards;
#[cfg(feature = "cli")]
mod sync;
#[cfg(feature = "cli")]
mod training;
#[cfg(feature = "cli")]
mod workflow;
