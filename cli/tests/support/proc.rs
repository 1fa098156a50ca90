//! A child process whose stdout and stderr go to a log file in the test's temporary folder, so a
//! failing test can show what each service and worker said; killed and reaped when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with both output streams appended to `<log_dir>/<name>.log` (a numbered file
    /// when the name was used before, e.g. a restarted coordinator).
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let mut log = log_dir.join(format!("{name}.log"));
        let mut n = 1;
        while log.exists() {
            n += 1;
            log = log_dir.join(format!("{name}.{n}.log"));
        }
        let file = File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        cmd.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Proc { name: name.to_string(), log, child, exited: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last `lines` lines of the log, headed by the process name.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.output();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!("----- {} ({}) last {} lines -----\n{}\n", self.name, self.log.display(), all.len() - start, all[start..].join("\n"))
    }

    /// The exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    pub fn running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits until the log holds a line containing `needle`; returns that line. Fails when the
    /// process exits first or the time runs out.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.try_exit() {
                // One more read: the line may have been written just before the exit.
                if let Some(line) = self.output().lines().find(|l| l.contains(needle)) {
                    return Ok(line.to_string());
                }
                return Err(format!("{} exited ({status}) before printing `{needle}`\n{}", self.name, self.tail(40)));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not print `{needle}` within {timeout:?}\n{}", self.name, self.tail(40)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up, like a machine losing power.
    pub fn kill9(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        self.exited = self.child.wait().ok();
    }

    /// SIGKILL at a moment the process has a file open whose path satisfies `open` (e.g. the
    /// temporary file of an upload in progress), so the kill lands mid-write: the process is frozen
    /// (SIGSTOP) every few milliseconds, its open files are read from `/proc/<pid>/fd`, and it is
    /// killed while frozen when one matches, else let go on (SIGCONT). Returns the matching path,
    /// as the kill left it, or `None` when no such moment came within `timeout`.
    pub fn kill9_while_open(&mut self, open: impl Fn(&Path) -> bool, timeout: Duration) -> Option<PathBuf> {
        let pid = self.pid() as libc::pid_t;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.running() {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped (running() above).
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            // The stop takes effect asynchronously: wait until /proc says every thread is stopped.
            let frozen = Instant::now() + Duration::from_millis(200);
            while Instant::now() < frozen && !stopped(pid) {
                std::thread::yield_now();
            }
            let hit = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .find(|path| open(path));
            if hit.is_some() {
                self.kill9();
                return hit;
            }
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// Sends a signal by name (e.g. "TERM") with kill(1).
    pub fn signal(&mut self, signal: &str) {
        if self.running() {
            let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("run kill(1)");
            assert!(status.success(), "kill -{signal} {} failed", self.pid());
        }
    }
}

/// Whether every thread of `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`).
fn stopped(pid: libc::pid_t) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return true };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        stat.rsplit(')').next().is_none_or(|rest| rest.trim_start().starts_with(['T', 't', 'Z', 'X']))
    })
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
