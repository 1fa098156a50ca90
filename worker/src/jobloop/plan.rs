//! The agent's pure decisions, kept apart so they can be tested without a coordinator or a GPU:
//! backoff delays, warning pacing, grouping jobs into render calls, and splitting a batch after
//! running out of GPU memory.

use std::time::{Duration, Instant};

/// Exponential backoff: `base`, doubling up to `cap`, optionally with ±25 % jitter so that many
/// workers restarting together do not call the coordinator in lockstep. A fresh one starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    cap: Duration,
    next: Duration,
    jitter: Option<XorShift>,
}

impl Backoff {
    /// A backoff without jitter (the exact sequence `base, 2·base, …, cap, cap, …`).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { cap, next: base, jitter: None }
    }

    /// A backoff whose every delay is drawn within ±25 % of the plain sequence.
    pub fn with_jitter(base: Duration, cap: Duration) -> Self {
        Self { jitter: Some(XorShift::seeded()), ..Self::new(base, cap) }
    }

    /// The backoff between reconnects and retried calls: 250 ms doubling to 5 s, with jitter.
    pub fn reconnect() -> Self {
        Self::with_jitter(Duration::from_millis(250), Duration::from_secs(5))
    }

    /// The backoff between empty leases: 100 ms doubling to 2 s, so new work is picked up quickly.
    pub fn idle() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// The delay to wait now; the following one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let plain = self.next;
        self.next = (self.next * 2).min(self.cap);
        match &mut self.jitter {
            Some(rng) => plain.mul_f64(0.75 + 0.5 * rng.unit()),
            None => plain,
        }
    }

    /// Sleeps for the next delay.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

/// A tiny xorshift generator for jitter; not for anything that needs real randomness.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        Self(if seed == 0 { 1 } else { seed })
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Lets a repeated warning through at most once per `every`, so a long outage logs a line every
/// few seconds instead of one per retry.
#[derive(Debug, Clone)]
pub struct Pacer {
    every: Duration,
    last: Option<Instant>,
}

impl Pacer {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether to log now (the first call always does).
    pub fn ready(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// Forgets the last warning, so the next problem is logged at once.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// Groups items by key, keeping the order of first appearance and the order within each group:
/// the jobs of one group share sampler settings and image size and so can share render calls.
pub fn group_by<K: PartialEq>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match groups.iter_mut().find(|(first, _)| keys[*first] == *key) {
            Some((_, members)) => members.push(i),
            None => groups.push((i, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// Sizes of the render calls for `len` jobs at `batch` images per call (the last may be smaller).
pub fn chunk_sizes(len: usize, batch: usize) -> Vec<usize> {
    let batch = batch.max(1);
    let mut sizes = vec![batch; len / batch];
    if !len.is_multiple_of(batch) {
        sizes.push(len % batch);
    }
    sizes
}

/// The batch size after a render call of `failed` images ran out of memory: half of what was
/// tried (never more than the current size, never less than one).
pub fn halved(batch: usize, failed: usize) -> usize {
    (failed.min(batch) / 2).max(1)
}

/// The render calls of one group of jobs: at most `batch` jobs per call, in order. A call that runs
/// out of memory is split and its jobs go first again, in calls of the halved batch size.
#[derive(Debug)]
pub struct Calls<T> {
    queue: std::collections::VecDeque<Vec<T>>,
}

impl<T> Calls<T> {
    pub fn new(jobs: Vec<T>, batch: usize) -> Self {
        let sizes = chunk_sizes(jobs.len(), batch);
        Self { queue: split_into(jobs, &sizes).into() }
    }

    /// The next call's jobs, at most `batch` of them (a call queued before the batch size shrank
    /// is split first).
    pub fn next_call(&mut self, batch: usize) -> Option<Vec<T>> {
        let call = self.queue.pop_front()?;
        if call.len() <= batch.max(1) {
            return Some(call);
        }
        let sizes = chunk_sizes(call.len(), batch);
        for piece in split_into(call, &sizes).into_iter().rev() {
            self.queue.push_front(piece);
        }
        self.queue.pop_front()
    }

    /// The call of `jobs` ran out of memory at batch size `batch`. Returns the new batch size with
    /// the jobs queued again in calls of that size, or gives the jobs back when there was only one
    /// (nothing smaller to try).
    pub fn out_of_memory(&mut self, jobs: Vec<T>, batch: usize) -> Result<usize, Vec<T>> {
        if jobs.len() <= 1 {
            return Err(jobs);
        }
        let smaller = halved(batch, jobs.len());
        let sizes = chunk_sizes(jobs.len(), smaller);
        for piece in split_into(jobs, &sizes).into_iter().rev() {
            self.queue.push_front(piece);
        }
        Ok(smaller)
    }
}

/// Splits `items` into consecutive pieces of the given sizes.
pub fn split_into<T>(items: Vec<T>, sizes: &[usize]) -> Vec<Vec<T>> {
    let mut rest = items.into_iter();
    sizes.iter().map(|&n| rest.by_ref().take(n).collect()).filter(|piece: &Vec<T>| !piece.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn idle_backoff_doubles_from_100ms_to_2s() {
        let mut b = Backoff::idle();
        let seq: Vec<u128> = (0..7).map(|_| ms(b.next_delay())).collect();
        assert_eq!(seq, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn reconnect_backoff_is_jittered_around_250ms_doubling_to_5s() {
        let mut b = Backoff::reconnect();
        let plain = [250u128, 500, 1000, 2000, 4000, 5000, 5000, 5000];
        for want in plain {
            let got = ms(b.next_delay());
            assert!(got * 4 >= want * 3 && got * 4 <= want * 5, "{got} ms is not within 25 % of {want} ms");
        }
    }

    #[test]
    fn jitter_draws_differ_and_stay_in_unit_range() {
        let mut rng = XorShift(42);
        let draws: Vec<f64> = (0..1000).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }

    #[test]
    fn pacer_lets_one_warning_through_per_period() {
        let mut p = Pacer::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(p.ready(t0));
        assert!(!p.ready(t0 + Duration::from_secs(3)));
        assert!(p.ready(t0 + Duration::from_secs(10)));
        p.reset();
        assert!(p.ready(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn grouping_keeps_first_appearance_order() {
        let keys = ["a", "b", "a", "c", "b", "a"];
        assert_eq!(group_by(&keys), vec![vec![0, 2, 5], vec![1, 4], vec![3]]);
        assert!(group_by::<u8>(&[]).is_empty());
    }

    #[test]
    fn chunks_cover_every_job_at_most_batch_at_a_time() {
        assert_eq!(chunk_sizes(8, 4), [4, 4]);
        assert_eq!(chunk_sizes(7, 4), [4, 3]);
        assert_eq!(chunk_sizes(3, 4), [3]);
        assert_eq!(chunk_sizes(3, 0), [1, 1, 1]);
        assert!(chunk_sizes(0, 4).is_empty());
    }

    #[test]
    fn out_of_memory_halves_what_was_tried_down_to_one() {
        assert_eq!(halved(8, 8), 4);
        assert_eq!(halved(8, 3), 1, "a short chunk of 3 failed: try 1, not 4");
        assert_eq!(halved(8, 6), 3);
        assert_eq!(halved(4, 2), 1);
        assert_eq!(halved(1, 1), 1);
        // Halving repeatedly from 16 reaches 1 and stays there.
        let mut b = 16;
        let mut seen = vec![b];
        while b > 1 {
            b = halved(b, b);
            seen.push(b);
        }
        assert_eq!(seen, [16, 8, 4, 2, 1]);
    }

    /// Drives `Calls` like the agent does against a GPU that fits at most `fits` images per call.
    fn simulate(jobs: usize, batch: usize, fits: usize) -> (Vec<Vec<usize>>, Vec<usize>, usize) {
        let mut batch = batch;
        let mut calls = Calls::new((0..jobs).collect(), batch);
        let (mut rendered, mut failed) = (Vec::new(), Vec::new());
        while let Some(call) = calls.next_call(batch) {
            if call.len() <= fits {
                rendered.push(call);
                continue;
            }
            match calls.out_of_memory(call, batch) {
                Ok(smaller) => batch = smaller,
                Err(single) => failed.extend(single),
            }
        }
        (rendered, failed, batch)
    }

    #[test]
    fn out_of_memory_calls_are_rendered_again_in_halves_until_they_fit() {
        let (rendered, failed, batch) = simulate(8, 8, 3);
        assert_eq!(rendered, vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]);
        assert!(failed.is_empty());
        assert_eq!(batch, 2, "the halved size is kept");
        // Later groups start at the kept size and fit at once.
        let (rendered, _, batch) = simulate(5, batch, 3);
        assert_eq!(rendered, vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert_eq!(batch, 2);
    }

    #[test]
    fn a_single_job_that_does_not_fit_is_given_back_to_fail() {
        let (rendered, failed, batch) = simulate(3, 4, 0);
        assert!(rendered.is_empty());
        assert_eq!(failed, [0, 1, 2]);
        assert_eq!(batch, 1);
        let (rendered, failed, _) = simulate(2, 1, 1);
        assert_eq!(rendered, vec![vec![0], vec![1]]);
        assert!(failed.is_empty());
    }

    #[test]
    fn an_out_of_memory_chunk_is_re_rendered_in_halves_in_order() {
        let jobs: Vec<u32> = (0..6).collect();
        let batch = halved(6, jobs.len());
        let pieces = split_into(jobs, &chunk_sizes(6, batch));
        assert_eq!(pieces, vec![vec![0, 1, 2], vec![3, 4, 5]]);
        // A piece that fails again is split again.
        let batch = halved(batch, 3);
        assert_eq!(split_into(pieces[0].clone(), &chunk_sizes(3, batch)), vec![vec![0], vec![1], vec![2]]);
    }
}
