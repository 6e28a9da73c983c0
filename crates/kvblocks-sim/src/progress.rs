//! The progress bar: shown on stderr only once a run has taken more than a
//! second, so quick runs print nothing but their results. indicatif hides it
//! by itself when stderr is not a terminal.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work must run before the bar appears.
pub const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A progress bar over a known number of steps that stays hidden for the
/// first [`SHOW_AFTER`].
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    shown: bool,
    enabled: bool,
}

impl Progress {
    /// A bar over `total` steps; `enabled = false` never shows it.
    pub fn new(total: u64, enabled: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(
            "{spinner} {msg:24} [{bar:30}] {percent:>3}% {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Self {
            bar,
            start: Instant::now(),
            shown: false,
            enabled,
        }
    }

    /// Names the current step (e.g. `lru @ 4000`).
    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Advances by `delta` steps; reveals the bar once [`SHOW_AFTER`] passed.
    pub fn inc(&mut self, delta: u64) {
        self.bar.inc(delta);
        if self.enabled && !self.shown && self.start.elapsed() >= SHOW_AFTER {
            self.shown = true;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
