//! `milan train`: learn a hash head from labelled features (docs/training.md).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use milan::dataset::Dataset;
use milan::eval::{select, select_rows, split_per_class};
use milan::train::{Recipe, TrainConfig, TrainData, TrainProgress, Trainer};
use milan::Error;
use milan::TrainError;

use crate::split_args::SplitArgs;
use crate::{progress, Outcome};

#[derive(Args)]
pub struct TrainArgs {
    /// Labelled features: a folder written by `milan extract`, or an index whose images were
    /// added with --keep-features and --label-from-dir.
    #[arg(long)]
    data: PathBuf,
    /// Code length K: a multiple of 8 from 8 to 1024.
    #[arg(long, required_unless_present = "resume")]
    bits: Option<u32>,
    /// Output head file.
    #[arg(long)]
    out: PathBuf,
    /// The recipe: `milan-plus` (milan's own) or `milan-paper` (MiLaN exactly as published).
    #[arg(long, default_value = "milan-plus", value_parser = parse_recipe)]
    recipe: Recipe,
    /// Optimisation steps [default: the recipe's, 2000 or 10000].
    #[arg(long)]
    iters: Option<u64>,
    /// Batch size [default: 90].
    #[arg(long)]
    batch: Option<usize>,
    /// Hidden layer widths, comma-separated [default: 1024,512].
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Triplet margin [default: 0.2].
    #[arg(long)]
    alpha: Option<f64>,
    /// Weight of the push term [default: 0.001].
    #[arg(long)]
    beta: Option<f64>,
    /// Weight of the balance term [default: 1].
    #[arg(long)]
    gamma: Option<f64>,
    /// Adam's learning rate [default: 1e-4].
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of the initialisation and of batch drawing: same data, seed and threads, same head.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Report the validation mAP@20 every this many steps (0: never). Without --holdout the
    /// test split is the validation set, only watched, never used to choose the head.
    #[arg(long, default_value_t = 500)]
    validate_every: u64,
    /// Hold this fraction of each class's training items out for validation, and keep the head
    /// that validates best.
    #[arg(long)]
    holdout: Option<f64>,
    /// With --holdout: stop after this many validations in a row without improvement.
    #[arg(long, requires = "holdout")]
    patience: Option<u64>,
    /// Save the training state to this file every --checkpoint-every steps and on Ctrl-C.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Continue the run saved in this checkpoint (same data, split and --holdout; the settings
    /// come from the checkpoint). Further checkpoints go to the same file unless --checkpoint.
    #[arg(long, conflicts_with_all = ["bits", "recipe", "iters", "batch", "hidden", "alpha", "beta", "gamma", "lr", "seed", "validate_every", "patience"])]
    resume: Option<PathBuf>,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    /// No progress bar or validation lines.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    split: SplitArgs,
}

fn parse_recipe(name: &str) -> std::result::Result<Recipe, String> {
    Recipe::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Recipe::ALL.iter().map(|r| r.name()).collect();
        format!("unknown recipe {name:?}; use one of {}", names.join(", "))
    })
}

/// The settings of a fresh run, from the recipe and the flags.
fn config(args: &TrainArgs, bits: u32) -> TrainConfig {
    let mut config = TrainConfig::new(args.recipe, bits);
    config.iters = args.iters.unwrap_or(config.iters);
    config.batch = args.batch.unwrap_or(config.batch);
    config.hidden = args.hidden.clone().unwrap_or(config.hidden);
    config.alpha = args.alpha.unwrap_or(config.alpha);
    config.beta = args.beta.unwrap_or(config.beta);
    config.gamma = args.gamma.unwrap_or(config.gamma);
    config.lr = args.lr.unwrap_or(config.lr);
    config.seed = args.seed;
    config.threads = args.threads;
    config.validate_every = args.validate_every;
    config.keep_best = args.holdout.is_some();
    config.patience = args.patience.unwrap_or(0);
    config
}

/// Writes `bytes` to `path` through a temporary file, so that a kill never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("{}: cannot write", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Names the class of a too-small-class error.
fn explain(err: Error, dataset: &Dataset) -> anyhow::Error {
    match &err {
        &Error::Train(TrainError::ClassTooSmall { label, .. }) => {
            let name = dataset.class_name(label).to_string();
            anyhow!(err).context(format!("class {label} is {name:?}"))
        }
        _ => anyhow!(err),
    }
}

pub fn run(args: TrainArgs) -> Result<Outcome> {
    if let Some(holdout) = args.holdout {
        if !(holdout > 0.0 && holdout < 1.0) {
            bail!("--holdout {holdout}: use a fraction between 0 and 1 (exclusive)");
        }
    }
    // A head that cannot be written should fail now, not after the whole run.
    let out_dir = match args.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !out_dir.is_dir() {
        bail!(
            "{}: the folder for --out does not exist",
            args.out.display()
        );
    }
    let dataset = Dataset::load(&args.data)?;
    let spec = args.split.spec(None)?;
    let split = dataset.split(&spec)?;
    let train_keys = select(&dataset.keys, &split.train);
    let train_labels = select(&dataset.labels, &split.train);
    let train_features = select_rows(dataset.features.view(), &split.train);
    // With --holdout the training split is split again: fit on one part, validate on the other.
    let (fit_rows, holdout_rows) = match args.holdout {
        Some(holdout) => {
            let inner = split_per_class(&train_labels, &train_keys, 1.0 - holdout, None)?;
            (inner.train, inner.test)
        }
        None => ((0..split.train.len()).collect(), Vec::new()),
    };
    if args.holdout.is_some() && holdout_rows.len() < 2 {
        bail!(
            "--holdout {}: holds out {} of the {} training items; validation needs at least 2 (raise --holdout)",
            args.holdout.unwrap_or_default(),
            holdout_rows.len(),
            split.train.len()
        );
    }
    let fit_features = select_rows(train_features.view(), &fit_rows);
    let fit_labels = select(&train_labels, &fit_rows);
    let (validation_features, validation_labels, validation_name) = if args.holdout.is_some() {
        (
            select_rows(train_features.view(), &holdout_rows),
            select(&train_labels, &holdout_rows),
            "held-out",
        )
    } else {
        (
            select_rows(dataset.features.view(), &split.test),
            select(&dataset.labels, &split.test),
            "test",
        )
    };
    if fit_labels.is_empty() {
        bail!(
            "{}: the training split is empty; raise --train-fraction or check the split lists",
            args.data.display()
        );
    }
    let data = TrainData {
        features: fit_features.view(),
        labels: &fit_labels,
    };
    let validation = (validation_labels.len() >= 2).then_some(TrainData {
        features: validation_features.view(),
        labels: &validation_labels,
    });

    let checkpoint_path = args.checkpoint.clone().or_else(|| args.resume.clone());
    let mut trainer = match &args.resume {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            let threads = (args.threads != 0).then_some(args.threads);
            Trainer::resume(&bytes, data, validation, threads)
                .with_context(|| format!("{}: cannot resume", path.display()))?
        }
        None => {
            let bits = args.bits.expect("clap requires --bits without --resume");
            Trainer::new(config(&args, bits), data, validation)
                .map_err(|err| explain(err, &dataset))?
        }
    };
    let config = trainer.config().clone();
    if !args.quiet && !args.json {
        eprintln!(
            "training a {}-bit head with {} on {} items of {} classes ({} validation items, {}){}",
            config.bits,
            config.recipe,
            fit_labels.len(),
            dataset.classes.len(),
            validation.map_or(0, |v| v.labels.len()),
            validation_name,
            if trainer.step() > 0 {
                format!("; resuming at step {}", trainer.step())
            } else {
                String::new()
            }
        );
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let bar = progress::training_bar(config.iters, args.quiet || args.json);
    bar.set_position(trainer.step());
    let log_lines = !args.quiet && !args.json && bar.is_hidden();
    let mut report = |p: &TrainProgress| {
        if p.step.is_multiple_of(10) || p.step == p.iters {
            bar.set_position(p.step);
            bar.set_message(format!("{:.4}", p.loss.total));
        }
        if let Some(map) = p.val_map {
            let line = format!(
                "step {}/{}: loss {:.4}, {validation_name} mAP@{} {map:.4}",
                p.step, p.iters, p.loss.total, config.validate_k
            );
            if log_lines {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
    };
    loop {
        let next = match &checkpoint_path {
            Some(_) => (trainer.step() / args.checkpoint_every + 1) * args.checkpoint_every,
            None => config.iters,
        };
        let outcome = trainer.run_until(next, &mut report, &cancel);
        if let Some(path) = &checkpoint_path {
            if trainer.step() > 0 {
                write_atomically(path, &trainer.checkpoint())?;
            }
        }
        match outcome {
            Ok(()) if trainer.finished() => break,
            Ok(()) => {}
            Err(Error::Cancelled) => {
                bar.finish_and_clear();
                return Err(match checkpoint_path.as_ref().filter(|_| trainer.step() > 0) {
                    Some(path) => anyhow!(
                        "interrupted at step {}; continue with --resume {}",
                        trainer.step(),
                        path.display()
                    ),
                    None => anyhow!(
                        "interrupted at step {}; nothing saved (use --checkpoint to be able to resume)",
                        trainer.step()
                    ),
                });
            }
            Err(err) => return Err(err.into()),
        }
    }
    bar.finish_and_clear();

    let description = serde_json::json!({
        "path": std::path::absolute(&args.data).unwrap_or(args.data.clone()),
        "items": dataset.labels.len(),
        "classes": dataset.classes,
        "split": spec,
        "holdout": args.holdout,
        "validation": validation.map(|_| validation_name),
    });
    let head = trainer.head(dataset.binding(), description)?;
    head.write(&args.out)?;
    let best = trainer.best();
    if args.json {
        let summary = serde_json::json!({
            "head": args.out,
            "bits": config.bits,
            "recipe": config.recipe,
            "steps": trainer.step(),
            "train_items": fit_labels.len(),
            "validation": validation.map(|_| validation_name),
            "best_validation": best.map(|(step, map)| serde_json::json!({"step": step, "map": map})),
            "kept": if config.keep_best { "best" } else { "last" },
        });
        outln!("{summary}")?;
    } else {
        outln!(
            "wrote {} ({}-bit {} head, {} steps{})",
            args.out.display(),
            config.bits,
            config.recipe,
            trainer.step(),
            match best {
                Some((step, map)) if config.keep_best => format!(
                    "; kept step {step}, {validation_name} mAP@{} {map:.4}",
                    config.validate_k
                ),
                Some((step, map)) => format!(
                    "; best {validation_name} mAP@{} {map:.4} at step {step}, last step kept",
                    config.validate_k
                ),
                None => String::new(),
            }
        )?;
    }
    Ok(Outcome::Success)
}
