//! `milan head ...`: make hash heads.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use milan::{ExtractorBinding, HashHead};

use crate::extractor_args::ExtractorArgs;
use crate::Outcome;

#[derive(Subcommand)]
pub enum HeadCommand {
    /// Make an untrained head: random-hyperplane LSH, a baseline that works before any training.
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Random hyperplanes (locality-sensitive hashing); the only untrained kind.
    #[arg(long, required = true)]
    lsh: bool,
    /// Code length: a multiple of 8 from 8 to 1024.
    #[arg(long)]
    bits: u32,
    /// Feature dimension, when no --model is given (the head is then bound to no extractor).
    #[arg(long, conflicts_with = "model")]
    dim: Option<u32>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output head file.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    extractor: ExtractorArgs,
}

pub fn run(command: HeadCommand) -> Result<Outcome> {
    match command {
        HeadCommand::Init(args) => init(args),
    }
}

fn init(args: InitArgs) -> Result<Outcome> {
    if !args.bits.is_multiple_of(8) || !(8..=1024).contains(&args.bits) {
        bail!("--bits {}: use a multiple of 8 from 8 to 1024", args.bits);
    }
    let (dim, binding) = match (args.dim, &args.extractor.model) {
        (Some(dim), None) => (dim, None),
        (None, Some(_)) => {
            let extractor = args.extractor.open(None)?;
            let contract = extractor.contract();
            let binding = ExtractorBinding {
                fingerprint: contract.fingerprint,
                output: contract.output.clone(),
            };
            (contract.dim, Some(binding))
        }
        _ => bail!("give --model (the head is then bound to that extractor) or --dim"),
    };
    let head = HashHead::lsh(args.bits, dim, args.seed, None, binding)?;
    head.write(&args.out)?;
    outln!(
        "wrote a {}-bit LSH head for {dim}-dimensional features to {}",
        args.bits,
        args.out.display()
    )?;
    Ok(Outcome::Success)
}
