//! The leases a worker holds, shared by the job loop and the heartbeat task.
//!
//! A job is held from the lease until its report is answered. The heartbeat names every held job;
//! one the coordinator did not keep was lost (the lease expired, the run was cancelled, …) and is
//! neither rendered further nor reported. A job whose report is already on its way is not counted
//! as lost when a heartbeat crosses the report.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// One job attempt: the job id and its fencing token.
pub type JobKey = (i64, i32);

#[derive(Debug, Default)]
struct Inner {
    /// Held job → whether its report is in flight.
    jobs: HashMap<JobKey, bool>,
    lost: HashSet<JobKey>,
}

/// The held leases (interior mutability; shared behind an `Arc`).
#[derive(Debug, Default)]
pub struct Held {
    inner: Mutex<Inner>,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records newly leased jobs.
    pub fn add(&self, jobs: impl IntoIterator<Item = JobKey>) {
        let mut inner = self.lock();
        for job in jobs {
            inner.jobs.insert(job, false);
        }
    }

    /// Every held job, for a heartbeat.
    pub fn snapshot(&self) -> Vec<JobKey> {
        let mut jobs: Vec<JobKey> = self.lock().jobs.keys().copied().collect();
        jobs.sort_unstable();
        jobs
    }

    /// Applies a heartbeat answer: of the jobs `sent`, those missing from `kept` that are still
    /// held and not being reported are lost. Returns them.
    pub fn apply_heartbeat(&self, sent: &[JobKey], kept: &[JobKey]) -> Vec<JobKey> {
        let kept: HashSet<JobKey> = kept.iter().copied().collect();
        let mut inner = self.lock();
        let mut lost = Vec::new();
        for job in sent {
            if !kept.contains(job) && inner.jobs.get(job) == Some(&false) {
                inner.jobs.remove(job);
                inner.lost.insert(*job);
                lost.push(*job);
            }
        }
        lost
    }

    /// Whether the job's lease was lost (render and report nothing for it).
    pub fn is_lost(&self, job: JobKey) -> bool {
        self.lock().lost.contains(&job)
    }

    /// Marks jobs as being reported and returns, for each, whether it may still be reported (false
    /// for a lost one, which is forgotten here).
    pub fn begin_report(&self, jobs: &[JobKey]) -> Vec<bool> {
        let mut inner = self.lock();
        jobs.iter()
            .map(|job| {
                if inner.lost.remove(job) {
                    return false;
                }
                inner.jobs.insert(*job, true);
                true
            })
            .collect()
    }

    /// Forgets jobs whose report was answered (or that were dropped).
    pub fn release(&self, jobs: &[JobKey]) {
        let mut inner = self.lock();
        for job in jobs {
            inner.jobs.remove(job);
            inner.lost.remove(job);
        }
    }

    /// How many jobs are held.
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_missing_from_a_heartbeat_answer_is_lost_and_not_reported() {
        let held = Held::default();
        held.add([(1, 1), (2, 1), (3, 2)]);
        assert_eq!(held.snapshot(), [(1, 1), (2, 1), (3, 2)]);
        let lost = held.apply_heartbeat(&held.snapshot(), &[(1, 1), (3, 2)]);
        assert_eq!(lost, [(2, 1)]);
        assert!(held.is_lost((2, 1)));
        assert_eq!(held.snapshot(), [(1, 1), (3, 2)], "a lost job is not heartbeated again");
        assert_eq!(held.begin_report(&[(1, 1), (2, 1)]), [true, false]);
        assert!(!held.is_lost((2, 1)), "dropped once its report was skipped");
        held.release(&[(1, 1)]);
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_heartbeat_crossing_a_report_does_not_lose_the_reported_job() {
        let held = Held::default();
        held.add([(7, 3)]);
        let sent = held.snapshot();
        assert_eq!(held.begin_report(&[(7, 3)]), [true]);
        // The coordinator committed the completion before answering the heartbeat.
        assert!(held.apply_heartbeat(&sent, &[]).is_empty());
        held.release(&[(7, 3)]);
        assert!(held.apply_heartbeat(&sent, &[]).is_empty());
        assert_eq!(held.len(), 0);
    }
}
