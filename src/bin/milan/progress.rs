//! Progress bars on standard error, drawn only for a terminal and never with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps, hidden when standard error is not a terminal or `quiet` is set.
pub fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    styled(
        len,
        quiet,
        &format!("{what} {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, ETA {{eta}})"),
    )
}

/// A bar of training steps showing the last loss (its message), hidden as [`bar`] is.
pub fn training_bar(steps: u64, quiet: bool) -> ProgressBar {
    styled(
        steps,
        quiet,
        "training {bar:40} {pos}/{len} loss {msg} ({per_sec}, ETA {eta})",
    )
}

fn styled(len: u64, quiet: bool, template: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}
