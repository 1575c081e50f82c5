//! milan's integration tests: one binary, shared helpers in `util`.

mod api;
mod bad_input;
mod cli;
mod duplicates;
mod engine;
mod files;
mod images;
mod import;
mod persistence;
mod processes;
mod scale;
mod shards;
mod sync;
mod training;
mod util;
mod workflow;
