//! Progress on stderr, drawn only when stderr is a terminal and `--quiet` is not given.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte counter with throughput.
pub struct Bytes(ProgressBar);

impl Bytes {
    /// A spinner labelled `what`; hidden when `quiet` or stderr is not a terminal.
    pub fn new(what: &'static str, quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {msg} {bytes} ({binary_bytes_per_sec})")
        {
            bar.set_style(style);
        }
        bar.set_message(what);
        Bytes(bar)
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        self.0.inc(n);
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
