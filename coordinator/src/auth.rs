//! Scoped tokens: a worker token opens the `Worker` service only, an operator token the `Admin`
//! service (and, later, the HTTP API's actions), a read-only token the HTTP API's reads. Each role
//! holds a set of tokens (current and next, so a rotation never has a moment where one side is
//! refused); tokens given as files are re-read when the files change, so rotating is: add the new
//! token beside the old one, move every client to it, remove the old one.
//!
//! Only SHA-256 digests of the tokens are kept, and a presented token is compared with every
//! digest of every role without stopping early: the time a check takes says nothing about how
//! much of a token was right, and the tokens themselves are never in memory longer than a load.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use tonic::Status;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// GPU workers: the `Worker` service.
    Worker,
    /// People and scripts running the farm: the `Admin` service.
    Operator,
    /// Read-only views (the HTTP API's reads and the dashboard); operator tokens may read too.
    Read,
}

impl Role {
    const ALL: [Role; 3] = [Role::Worker, Role::Operator, Role::Read];

    fn index(self) -> usize {
        self as usize
    }

    /// The role's name in session cookies and API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Operator => "operator",
            Role::Read => "read",
        }
    }

    /// The role in words, with its article.
    fn described(self) -> &'static str {
        match self {
            Role::Worker => "a worker token",
            Role::Operator => "an operator token",
            Role::Read => "a read-only token",
        }
    }

    /// Where the coordinator takes this role's tokens from, for the sentences that name the fix.
    fn settings(self) -> &'static str {
        match self {
            Role::Worker => "worker_token_file (or token_file)",
            Role::Operator => "operator_token_file (or token_file)",
            Role::Read => "read_token_file (or token_file)",
        }
    }

    /// The service a role opens, for refusals.
    fn service(self) -> &'static str {
        match self {
            Role::Worker => "the Worker service",
            Role::Operator => "the Admin service",
            Role::Read => "read-only calls",
        }
    }
}

/// Where one role's tokens come from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given in the config file or an `ACUFARM_…` variable: fixed for the life of the process.
    Inline { setting: String, tokens: Vec<String> },
    /// A file holding one token per line (current and next), re-read when it changes.
    File { setting: String, path: PathBuf },
}

impl std::fmt::Debug for TokenSource {
    /// Shows where tokens come from, never a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Inline { setting, tokens } => write!(f, "{setting} ({} tokens, ***)", tokens.len()),
            TokenSource::File { setting, path } => write!(f, "{setting} = {}", path.display()),
        }
    }
}

/// Splits a token setting into its tokens: one per line (or separated by commas); blank lines and
/// lines starting with `#` are skipped. `what` names the setting in errors, which never quote a
/// token.
pub fn parse_tokens(text: &str, what: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        for token in line.split(',').map(str::trim).filter(|token| !token.is_empty()) {
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{what} holds a token with characters a request header cannot carry; use printable ASCII without spaces (one token per line)"
                ));
            }
            tokens.push(token.to_string());
        }
    }
    if tokens.is_empty() {
        return Err(format!("{what} holds no token; put one token per line in it"));
    }
    Ok(tokens)
}

impl TokenSource {
    /// The tokens it holds now.
    pub fn read(&self) -> Result<Vec<String>, String> {
        match self {
            TokenSource::Inline { setting, tokens } => parse_tokens(&tokens.join("\n"), setting),
            TokenSource::File { setting, path } => {
                let text = read_secret_file(path, setting)?;
                parse_tokens(&text, &format!("token file {} ({setting})", path.display()))
            }
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            TokenSource::File { path, .. } => Some(path),
            TokenSource::Inline { .. } => None,
        }
    }
}

/// Reads a secret from a file (a Kubernetes Secret mounted as a file, say); the error names the
/// file and the setting, never the content.
pub fn read_secret_file(path: &Path, setting: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {} named by {setting} ({e}); check the path and that the coordinator may read it", path.display()))
}

pub(crate) fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The tokens of every role, reloadable.
pub struct Tokens {
    /// Where each role's tokens come from, indexed by [`Role::index`].
    sources: [TokenSource; 3],
    /// The digests of each role's tokens, indexed by [`Role::index`].
    digests: RwLock<[Vec<[u8; 32]>; 3]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("worker", &self.sources[0]).field("operator", &self.sources[1]).field("read", &self.sources[2]).finish()
    }
}

/// How a presented token compares with the configured ones.
#[derive(Debug, PartialEq, Eq)]
enum Match {
    /// It is one of the role's tokens.
    Allowed,
    /// It is a token of another role only.
    OtherRole(Role),
    Unknown,
}

impl Tokens {
    /// Reads every source once; an unreadable or empty one is an error.
    pub fn load(worker: TokenSource, operator: TokenSource, read: TokenSource) -> Result<Self, String> {
        let sources = [worker, operator, read];
        let digests = Self::read_all(&sources)?;
        Ok(Self { sources, digests: RwLock::new(digests) })
    }

    fn read_all(sources: &[TokenSource; 3]) -> Result<[Vec<[u8; 32]>; 3], String> {
        let mut digests: [Vec<[u8; 32]>; 3] = Default::default();
        for (slot, source) in digests.iter_mut().zip(sources) {
            *slot = source.read()?.iter().map(|token| digest(token.as_bytes())).collect();
        }
        Ok(digests)
    }

    /// The token files, for the reload watch.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.sources.iter().filter_map(|s| s.path().map(Path::to_path_buf)).collect();
        files.dedup();
        files
    }

    /// Re-reads every source. On an error (a file half-written, emptied or gone) the tokens in
    /// use stay, so a botched rotation refuses no one who was accepted before. Returns how many
    /// tokens each role holds now.
    pub fn reload(&self) -> Result<[usize; 3], String> {
        let fresh = Self::read_all(&self.sources)?;
        let counts = [fresh[0].len(), fresh[1].len(), fresh[2].len()];
        *self.digests.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(counts)
    }

    fn classify(&self, presented: &[u8], role: Role) -> Match {
        self.classify_digest(&digest(presented), role)
    }

    fn classify_digest(&self, presented: &[u8; 32], role: Role) -> Match {
        let digests = self.digests.read().unwrap_or_else(|p| p.into_inner());
        let mut found = [false; 3];
        // Every digest of every role is compared, whatever matched already.
        for other in Role::ALL {
            for known in &digests[other.index()] {
                let difference = known.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
                found[other.index()] |= difference == 0;
            }
        }
        // Operators may read.
        let allowed = found[role.index()] || (role == Role::Read && found[Role::Operator.index()]);
        match Role::ALL.into_iter().find(|other| found[other.index()]) {
            _ if allowed => Match::Allowed,
            Some(other) => Match::OtherRole(other),
            None => Match::Unknown,
        }
    }

    /// The digest of `token` and the role a dashboard session opened with it gets: operator
    /// before read-only; a worker token or an unknown one opens none (the error says which).
    pub fn session_role(&self, token: &[u8]) -> Result<([u8; 32], Role), Status> {
        let presented = digest(token);
        for role in [Role::Operator, Role::Read] {
            match self.classify_digest(&presented, role) {
                Match::Allowed => return Ok((presented, role)),
                Match::OtherRole(Role::Worker) => {
                    return Err(Status::permission_denied(
                        "that is a worker token, which opens no dashboard session; sign in with a read-only or operator token",
                    ));
                }
                _ => {}
            }
        }
        Err(Status::unauthenticated(format!(
            "the coordinator refused the token; sign in with a token from its {} or {}",
            Role::Read.settings(),
            Role::Operator.settings()
        )))
    }

    /// Whether the token a session was opened with (by digest) is still one of `role`'s, so
    /// removing a token from its file ends the sessions opened with it.
    pub fn digest_allows(&self, digest: &[u8; 32], role: Role) -> bool {
        self.classify_digest(digest, role) == Match::Allowed
    }

    /// Checks the `authorization: Bearer <token>` value of a call that needs `role`. Refusals are
    /// one sentence naming the token needed; they never quote what was presented.
    pub fn check(&self, header: Option<&[u8]>, role: Role) -> Result<(), Status> {
        let fix = format!("pass the CLI or worker --token-file (or ACUFARM_TOKEN_FILE) holding a token from the coordinator's {}", role.settings());
        let Some(header) = header else {
            return Err(Status::unauthenticated(format!("the call carried no token; {fix}")));
        };
        let token = header.strip_prefix(b"Bearer ").unwrap_or(b"");
        match self.classify(token, role) {
            Match::Allowed => Ok(()),
            Match::OtherRole(other) => Err(Status::permission_denied(format!(
                "the coordinator refused {} for {}, which needs {}; {fix}",
                other.described(),
                role.service(),
                role.described()
            ))),
            Match::Unknown => Err(Status::unauthenticated(format!("the coordinator refused the token; {fix}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(setting: &str, tokens: &[&str]) -> TokenSource {
        TokenSource::Inline { setting: setting.into(), tokens: tokens.iter().map(|t| t.to_string()).collect() }
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn each_role_opens_its_own_service_and_refusals_name_the_token_needed() {
        let tokens = Tokens::load(inline("worker_token", &["w-old", "w-new"]), inline("operator_token", &["op"]), inline("read_token", &["ro"])).unwrap();
        for token in ["w-old", "w-new"] {
            assert!(tokens.check(Some(&bearer(token)), Role::Worker).is_ok());
        }
        assert!(tokens.check(Some(&bearer("op")), Role::Operator).is_ok());
        assert!(tokens.check(Some(&bearer("ro")), Role::Read).is_ok());
        assert!(tokens.check(Some(&bearer("op")), Role::Read).is_ok(), "operators may read");

        let refused = tokens.check(Some(&bearer("w-new")), Role::Operator).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().starts_with("the coordinator refused a worker token for the Admin service, which needs an operator token;"),
            "{}",
            refused.message()
        );
        assert!(refused.message().contains("operator_token_file") && !refused.message().contains("w-new"), "{}", refused.message());
        let refused = tokens.check(Some(&bearer("op")), Role::Worker).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("worker_token_file"), "{}", refused.message());
        let refused = tokens.check(Some(&bearer("ro")), Role::Operator).unwrap_err();
        assert!(refused.message().contains("refused a read-only token"), "{}", refused.message());

        for wrong in ["w-ol", "w-old2", "W-OLD", "", "Bearer", "op op"] {
            let refused = tokens.check(Some(&bearer(wrong)), Role::Worker).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{wrong}");
            assert!(refused.message().starts_with("the coordinator refused the token;"), "{}", refused.message());
        }
        assert_eq!(tokens.check(Some(&b"w-old"[..]), Role::Worker).unwrap_err().code(), tonic::Code::Unauthenticated, "the Bearer prefix is required");
        assert!(tokens.check(None, Role::Worker).unwrap_err().message().starts_with("the call carried no token;"));
    }

    #[test]
    fn one_shared_token_opens_everything() {
        let shared = inline("token", &["t"]);
        let tokens = Tokens::load(shared.clone(), shared.clone(), shared).unwrap();
        for role in Role::ALL {
            assert!(tokens.check(Some(&bearer("t")), role).is_ok(), "{role:?}");
        }
    }

    #[test]
    fn token_files_hold_one_token_per_line_and_reload_keeps_the_old_ones_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker-tokens");
        std::fs::write(&path, "# current, then next\nold\n\nnew\n").unwrap();
        let file = TokenSource::File { setting: "worker_token_file".into(), path: path.clone() };
        let tokens = Tokens::load(file, inline("operator_token", &["op"]), inline("read_token", &["op"])).unwrap();
        assert_eq!(tokens.files(), std::slice::from_ref(&path));
        assert!(tokens.check(Some(&bearer("old")), Role::Worker).is_ok());
        assert!(tokens.check(Some(&bearer("new")), Role::Worker).is_ok());

        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(tokens.reload().unwrap(), [1, 1, 1]);
        assert_eq!(tokens.check(Some(&bearer("old")), Role::Worker).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(tokens.check(Some(&bearer("new")), Role::Worker).is_ok());

        // A file emptied mid-rotation is an error and changes nothing.
        std::fs::write(&path, "\n").unwrap();
        let error = tokens.reload().unwrap_err();
        assert!(error.contains("holds no token") && error.contains("worker_token_file"), "{error}");
        assert!(tokens.check(Some(&bearer("new")), Role::Worker).is_ok());
        std::fs::remove_file(&path).unwrap();
        assert!(tokens.reload().unwrap_err().starts_with(&format!("cannot read {}", path.display())));
        assert!(tokens.check(Some(&bearer("new")), Role::Worker).is_ok());
    }

    #[test]
    fn bad_tokens_are_refused_without_being_quoted() {
        for (text, expected) in [("", "holds no token"), ("# only a comment\n", "holds no token"), ("s3cr et", "cannot carry"), ("ok\nsécret", "cannot carry")]
        {
            let error = parse_tokens(text, "token_file /run/t").unwrap_err();
            assert!(error.contains(expected) && error.contains("token_file /run/t"), "{text:?}: {error}");
            assert!(!error.contains("cr et") && !error.contains("sécret"), "{error}");
        }
        assert_eq!(parse_tokens("a, b\nc\r\n", "t").unwrap(), ["a", "b", "c"]);
        let shown = format!("{:?}", inline("token", &["s3cret"]));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
