//! The store's errors: each one sentence naming the problem and the fix (DESIGN §9), and each
//! knowing whether retrying the same request can help.

use acufarm_core::RunId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach the database at {url} ({source}); start PostgreSQL or fix the database URL")]
    Unreachable {
        /// The URL with any password masked, so the message is safe to log.
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "cannot bring the database schema up to date ({source}); check that the database user may create tables, and that no migration file of this release was edited after a database applied it"
    )]
    Migrate {
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error("a run named `{name}` already exists; pick another run.name or pass --force to replace it")]
    RunNameTaken { name: String },

    #[error("run {run} does not exist; check the run id with `acufarm status`")]
    RunNotFound { run: RunId },

    #[error("run `{name}` is invalid: {reason}; fix the run spec and submit again")]
    InvalidRun { name: String, reason: String },

    #[error("run {run} is cancelled, so it cannot be {action}; submit it again with --force instead")]
    RunCancelled { run: RunId, action: &'static str },

    #[error("the database failed while {operation} ({source}); check that the database is up and retry")]
    Database {
        /// What the store was doing, in words ("leasing jobs").
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("the database holds a value this acufarm cannot read ({detail}); migrate the database or upgrade acufarm")]
    Corrupt { detail: String },
}

impl StoreError {
    /// Whether the same request may succeed later unchanged (the database was down or busy), as
    /// opposed to a request that must change first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Database { .. })
    }

    /// Wraps a sqlx error of `operation`.
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { operation, source }
    }
}

/// The URL with the password (if any) replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &userinfo[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_masks_only_the_password() {
        assert_eq!(redact_url("postgres://acu:s3cr3t@db:5432/farm"), "postgres://acu:***@db:5432/farm");
        assert_eq!(redact_url("postgres://postgres@127.0.0.1:5432/postgres"), "postgres://postgres@127.0.0.1:5432/postgres");
        assert_eq!(redact_url("postgres://db/farm?user=a"), "postgres://db/farm?user=a");
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }

    #[test]
    fn run_name_taken_says_how_to_fix_it() {
        let message = StoreError::RunNameTaken { name: "relight-v1".into() }.to_string();
        assert_eq!(message, "a run named `relight-v1` already exists; pick another run.name or pass --force to replace it");
    }

    #[test]
    fn unreachable_names_the_url_and_the_fix() {
        let error = StoreError::Unreachable { url: redact_url("postgres://u:pw@h/db"), source: sqlx::Error::PoolTimedOut };
        let message = error.to_string();
        assert!(message.contains("postgres://u:***@h/db") && message.contains("start PostgreSQL"), "{message}");
        assert!(!message.contains("pw@"));
        assert!(error.is_retryable());
    }
}
