//! The stop state set by SIGTERM and SIGINT: running, draining (first signal: finish the jobs in
//! hand, lease no more), aborted (second signal: quit at once).

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown(watch::Receiver<u8>);

const DRAINING: u8 = 1;
const ABORTED: u8 = 2;

impl Shutdown {
    /// Listens for SIGTERM and SIGINT (inside a Tokio runtime); `who` starts the line printed on
    /// the first signal (e.g. `acufarm worker`).
    pub fn install(who: &'static str) -> Result<Self, std::io::Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(0u8);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if *tx.borrow() == 0 {
                    eprintln!("{who}: stopping: finishing the jobs in hand and leasing no more (signal again to quit at once)");
                    tx.send_replace(DRAINING);
                } else {
                    tx.send_replace(ABORTED);
                }
            }
        });
        Ok(Self(rx))
    }

    /// Whether a first signal asked to stop.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow() >= DRAINING
    }

    async fn reached(&self, level: u8) {
        let mut rx = self.0.clone();
        if rx.wait_for(|s| *s >= level).await.is_err() {
            // The signal task is gone: no signal can arrive any more.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves at the first signal.
    pub async fn draining(&self) {
        self.reached(DRAINING).await
    }

    /// Resolves at the second signal.
    pub async fn aborted(&self) {
        self.reached(ABORTED).await
    }
}
