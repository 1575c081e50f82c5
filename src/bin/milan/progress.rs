//! Progress bars on standard error, drawn only for a terminal and never with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps, hidden when standard error is not a terminal or `quiet` is set.
pub fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, ETA {{eta}})"
        ))
        .expect("valid template"),
    );
    bar
}

/// A bar of training steps showing the last loss, hidden as [`bar`] is.
pub fn training_bar(steps: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "training {bar:40} {pos}/{len} loss {msg} ({per_sec}, ETA {eta})",
        )
        .expect("valid template"),
    );
    bar
}
