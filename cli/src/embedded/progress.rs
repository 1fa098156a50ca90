//! The progress line of an embedded run: done/total, images per second and ETA, redrawn once a
//! second on stderr (or not at all with `--quiet`).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Progress {
    total: u64,
    /// Jobs already finished when this process started (a resumed run).
    initial: u64,
    done: AtomicU64,
    failed: AtomicU64,
    started: Instant,
    quiet: bool,
    finished: AtomicBool,
}

/// Stops the redraw thread when dropped.
pub struct Ticker(Arc<Progress>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.finished.store(true, Ordering::Relaxed);
    }
}

impl Progress {
    pub fn new(total: u64, initial: u64, quiet: bool) -> Self {
        Self { total, initial, done: AtomicU64::new(initial), failed: AtomicU64::new(0), started: Instant::now(), quiet, finished: AtomicBool::new(false) }
    }

    pub fn add(&self, done: u64, failed: u64) {
        self.done.fetch_add(done, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
    }

    pub fn note(&self, text: &str) {
        eprintln!("{text}");
    }

    pub fn line(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = (done - self.initial) as f64 / elapsed;
        let eta = if rate > 0.0 { format_duration(Duration::from_secs_f64((self.total - done.min(self.total)) as f64 / rate)) } else { "--".into() };
        let width = 30usize;
        let filled = if self.total == 0 { width } else { (done as usize * width / self.total as usize).min(width) };
        format!("[{}{}] {done}/{} jobs ({failed} failed), {rate:.2} img/s, ETA {eta}", "=".repeat(filled), " ".repeat(width - filled), self.total)
    }

    pub fn start(self: Arc<Self>) -> Ticker {
        if !self.quiet {
            let me = self.clone();
            std::thread::spawn(move || {
                while !me.finished.load(Ordering::Relaxed) {
                    eprint!("\r{}", me.line());
                    let _ = std::io::stderr().flush();
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
        Ticker(self)
    }

    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
        if !self.quiet {
            eprintln!("\r{}", self.line());
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
        assert!(p.line().starts_with("[============                  ] 4/10 jobs (0 failed), 0.00 img/s, ETA --"), "{}", p.line());
        p.add(2, 1);
        assert!(p.line().contains("6/10 jobs (1 failed)"), "{}", p.line());
        assert_eq!(format_duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(format_duration(Duration::from_secs(75)), "1m15s");
    }
}
