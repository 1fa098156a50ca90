//! The progress of an embedded run: done/total, images per second and ETA. On a terminal an
//! indicatif bar on stderr; in a log (stderr not a terminal) one plain line every few seconds, so
//! no `\r` frames end up in files; nothing at all with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a log gets a progress line.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    total: u64,
    /// Jobs already finished when this process started (a resumed run).
    initial: u64,
    done: AtomicU64,
    failed: AtomicU64,
    started: Instant,
    quiet: bool,
    finished: AtomicBool,
    /// The terminal's bar; `None` in a log or with `--quiet`.
    bar: Option<ProgressBar>,
}

/// Stops the plain-line thread when dropped.
pub struct Ticker(Arc<Progress>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.finished.store(true, Ordering::Relaxed);
    }
}

impl Progress {
    pub fn new(total: u64, initial: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} jobs ({msg}), {per_sec}, ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_position(initial);
            bar.reset_eta();
            bar.set_message("0 failed");
            bar
        });
        Self { total, initial, done: AtomicU64::new(initial), failed: AtomicU64::new(0), started: Instant::now(), quiet, finished: AtomicBool::new(false), bar }
    }

    pub fn add(&self, done: u64, failed: u64) {
        self.done.fetch_add(done, Ordering::Relaxed);
        let failed = self.failed.fetch_add(failed, Ordering::Relaxed) + failed;
        if let Some(bar) = &self.bar {
            bar.inc(done);
            bar.set_message(format!("{failed} failed"));
        }
    }

    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub fn line(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = (done - self.initial) as f64 / elapsed;
        let eta = if rate > 0.0 { format_duration(Duration::from_secs_f64((self.total - done.min(self.total)) as f64 / rate)) } else { "--".into() };
        format!("progress: {done}/{} jobs ({failed} failed), {rate:.2} img/s, ETA {eta}", self.total)
    }

    pub fn start(self: Arc<Self>) -> Ticker {
        if !self.quiet && self.bar.is_none() {
            let me = self.clone();
            std::thread::spawn(move || {
                let mut last = Instant::now();
                while !me.finished.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() >= PLAIN_EVERY && !me.finished.load(Ordering::Relaxed) {
                        eprintln!("{}", me.line());
                        last = Instant::now();
                    }
                }
            });
        }
        Ticker(self)
    }

    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.finish(),
            None if !self.quiet => eprintln!("{}", self.line()),
            None => {}
        }
    }
}

fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_counts_rate_and_eta() {
        let p = Progress::new(10, 4, true);
        assert!(p.line().starts_with("progress: 4/10 jobs (0 failed), 0.00 img/s, ETA --"), "{}", p.line());
        p.add(2, 1);
        assert!(p.line().contains("6/10 jobs (1 failed)"), "{}", p.line());
        assert_eq!(format_duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(format_duration(Duration::from_secs(75)), "1m15s");
    }
}
