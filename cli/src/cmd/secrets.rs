//! `acufarm secrets init --dir DIR`: the files a farm needs to start with TLS and tokens — a CA,
//! the coordinators' certificate, a client certificate, the worker / operator / read tokens, the
//! dashboard's session key and (with `--postgres`) a PostgreSQL password and database URL. What
//! exists is kept, so running it again (a Compose one-shot on every `up`) changes nothing; the
//! TLS files are made as one set, so a half-written set is refused rather than mixed.

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Every file `secrets init` may write, in the order it writes them.
pub const TLS_FILES: [&str; 6] = ["ca.pem", "ca-key.pem", "coordinator.pem", "coordinator-key.pem", "client.pem", "client-key.pem"];
pub const TOKEN_FILES: [&str; 4] = ["worker-token", "operator-token", "read-token", "session-key"];
pub const POSTGRES_FILES: [&str; 2] = ["postgres-password", "database-url"];
/// What a worker needs, copied apart into `worker/`, so a GPU node can be given that folder alone
/// (never the CA's key, the coordinators' key or the database URL).
pub const WORKER_FILES: [&str; 2] = ["worker/ca.pem", "worker/worker-token"];

#[derive(clap::Args)]
pub struct Command {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Write what is missing of: ca.pem, ca-key.pem, coordinator.pem, coordinator-key.pem,
    /// client.pem, client-key.pem, worker-token, operator-token, read-token, session-key,
    /// worker/ca.pem, worker/worker-token (with --postgres: postgres-password, database-url).
    /// Existing files are kept. worker/ holds what a worker needs and nothing else.
    Init(InitArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    /// Folder to write into (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Names and IP addresses the coordinators are reached by (the certificate's subject
    /// alternative names), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    hosts: Vec<String>,
    /// Also write postgres-password and database-url = postgres://acufarm:PASSWORD@HOST:PORT/DB.
    #[arg(long, value_name = "HOST:PORT/DB")]
    postgres: Option<String>,
    /// Owner of the written files as UID:GID (e.g. 0:10001: root owns them, the images' acufarm
    /// group reads them). Secrets are mode 0640, certificates 0644.
    #[arg(long, value_name = "UID:GID")]
    owner: Option<String>,
    /// Validity of the certificates in days.
    #[arg(long, default_value_t = 825)]
    days: u32,
}

pub fn command(command: Command) -> anyhow::Result<()> {
    match command.action {
        Action::Init(args) => init(args),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let owner = args.owner.as_deref().map(parse_owner).transpose()?;
    let hosts: Vec<String> = args.hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    if hosts.is_empty() {
        bail!("--hosts names no host; give the names or addresses the coordinators are reached by, e.g. --hosts coordinator-a,coordinator-b,localhost");
    }
    let postgres = args.postgres.as_deref().map(parse_postgres).transpose()?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut written = Vec::new();
    let present: Vec<&str> = TLS_FILES.into_iter().filter(|name| args.dir.join(name).exists()).collect();
    match present.len() {
        0 => {
            for (name, text) in tls_set(&hosts, args.days)? {
                write_new(&args.dir, name, &text, owner)?;
                written.push(name);
            }
        }
        n if n == TLS_FILES.len() => {}
        _ => {
            let missing: Vec<&str> = TLS_FILES.into_iter().filter(|name| !present.contains(name)).collect();
            bail!(
                "{} holds part of a TLS set ({} present, {} missing); restore the missing files or remove the others to make a new set",
                args.dir.display(),
                present.join(", "),
                missing.join(", ")
            );
        }
    }
    for name in TOKEN_FILES {
        if !args.dir.join(name).exists() {
            write_new(&args.dir, name, &format!("{}\n", random_hex(32)?), owner)?;
            written.push(name);
        }
    }
    std::fs::create_dir_all(args.dir.join("worker")).with_context(|| format!("cannot create {}/worker", args.dir.display()))?;
    for (copy, source) in WORKER_FILES.into_iter().zip(["ca.pem", "worker-token"]) {
        if !args.dir.join(copy).exists() {
            let text = std::fs::read_to_string(args.dir.join(source)).with_context(|| format!("cannot read {}/{source}", args.dir.display()))?;
            write_new(&args.dir, copy, &text, owner)?;
            written.push(copy);
        }
    }
    if let Some((host, db)) = postgres {
        let password_path = args.dir.join(POSTGRES_FILES[0]);
        if !password_path.exists() {
            write_new(&args.dir, POSTGRES_FILES[0], &format!("{}\n", random_hex(24)?), owner)?;
            written.push(POSTGRES_FILES[0]);
        }
        if !args.dir.join(POSTGRES_FILES[1]).exists() {
            let password = std::fs::read_to_string(&password_path).with_context(|| format!("cannot read {}", password_path.display()))?;
            write_new(&args.dir, POSTGRES_FILES[1], &format!("postgres://acufarm:{}@{host}/{db}\n", password.trim()), owner)?;
            written.push(POSTGRES_FILES[1]);
        }
    }
    if written.is_empty() {
        eprintln!("acufarm secrets: {} already holds every file; nothing written", args.dir.display());
    } else {
        eprintln!("acufarm secrets: wrote {} in {}", written.join(", "), args.dir.display());
    }
    Ok(())
}

/// A CA, a server certificate for `hosts` and a client certificate, as (file name, PEM) pairs.
fn tls_set(hosts: &[String], days: u32) -> anyhow::Result<Vec<(&'static str, String)>> {
    let validity = |params: &mut CertificateParams| {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(i64::from(days));
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "acufarm CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca);
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(ca, ca_key)?;

    let mut server = CertificateParams::default();
    server.subject_alt_names = hosts
        .iter()
        .map(|host| match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => {
                Ok(SanType::DnsName(rcgen::string::Ia5String::try_from(host.clone()).with_context(|| format!("`{host}` is not a host name or IP address"))?))
            }
        })
        .collect::<anyhow::Result<_>>()?;
    server.distinguished_name.push(DnType::CommonName, hosts[0].as_str());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let mut client = CertificateParams::default();
    client.distinguished_name.push(DnType::CommonName, "acufarm client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut client);
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;
    Ok(vec![
        ("ca.pem", issuer.pem()),
        ("ca-key.pem", ca_key_pem),
        ("coordinator.pem", server_cert.pem()),
        ("coordinator-key.pem", server_key.serialize_pem()),
        ("client.pem", client_cert.pem()),
        ("client-key.pem", client_key.serialize_pem()),
    ])
}

/// Creates `dir/name` (never replacing a file), mode 0644 for certificates and 0640 otherwise.
fn write_new(dir: &Path, name: &str, text: &str, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let path = dir.join(name);
    let mode = if name.ends_with(".pem") && !name.ends_with("-key.pem") { 0o644 } else { 0o640 };
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", path.display()))?;
    // The umask may have narrowed the mode; set it as meant.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to {uid}:{gid} (run as root to pass --owner)", path.display()))?;
    }
    Ok(())
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| anyhow::anyhow!("no randomness from the system: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn parse_owner(text: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = text.split_once(':').and_then(|(u, g)| Some((u.trim().parse().ok()?, g.trim().parse().ok()?)));
    parsed.ok_or_else(|| anyhow::anyhow!("--owner `{text}` is not UID:GID; give numbers, e.g. --owner 0:10001"))
}

/// `HOST:PORT/DB` into (`HOST:PORT`, `DB`).
fn parse_postgres(text: &str) -> anyhow::Result<(String, String)> {
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    match text.split_once('/') {
        Some((host, db)) if host.split_once(':').is_some_and(|(h, p)| ok(h) && p.parse::<u16>().is_ok()) && ok(db) => Ok((host.to_string(), db.to_string())),
        _ => bail!("--postgres `{text}` is not HOST:PORT/DB; give e.g. --postgres postgres:5432/acufarm"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_postgres_flags_parse_or_say_the_form() {
        assert_eq!(parse_owner("0:10001").unwrap(), (0, 10001));
        assert!(parse_owner("root").unwrap_err().to_string().contains("UID:GID"));
        assert_eq!(parse_postgres("postgres:5432/acufarm").unwrap(), ("postgres:5432".into(), "acufarm".into()));
        for bad in ["postgres/acufarm", "postgres:x/acufarm", "postgres:5432/", "a b:1/c", "h:1/d?sslmode=x"] {
            assert!(parse_postgres(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn init_writes_a_set_keeps_it_and_refuses_a_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let args = |dir: &Path| InitArgs {
            dir: dir.to_path_buf(),
            hosts: vec!["coordinator-a".into(), "10.0.0.2".into()],
            postgres: Some("pg:5432/farm".into()),
            owner: None,
            days: 30,
        };
        init(args(dir.path())).unwrap();
        let names: Vec<&str> = TLS_FILES.iter().chain(&TOKEN_FILES).chain(&POSTGRES_FILES).chain(&WORKER_FILES).copied().collect();
        let before: Vec<String> = names.iter().map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap()).collect();
        let url = &before[names.iter().position(|n| *n == "database-url").unwrap()];
        let password = &before[names.iter().position(|n| *n == "postgres-password").unwrap()];
        assert_eq!(url.trim(), format!("postgres://acufarm:{}@pg:5432/farm", password.trim()));
        assert_eq!(std::fs::metadata(dir.path().join("worker-token")).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::metadata(dir.path().join("ca.pem")).unwrap().permissions().mode() & 0o777, 0o644);
        let copy = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!((copy("worker/ca.pem"), copy("worker/worker-token")), (copy("ca.pem"), copy("worker-token")), "the worker's folder holds copies");
        // Again: nothing changes.
        init(args(dir.path())).unwrap();
        let after: Vec<String> = names.iter().map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap()).collect();
        assert_eq!(before, after);
        // A lost token is made again; a lost key of the TLS set is refused.
        std::fs::remove_file(dir.path().join("read-token")).unwrap();
        init(args(dir.path())).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("read-token")).unwrap().trim().len(), 64);
        std::fs::remove_file(dir.path().join("coordinator-key.pem")).unwrap();
        let error = init(args(dir.path())).unwrap_err().to_string();
        assert!(error.contains("part of a TLS set") && error.contains("coordinator-key.pem missing"), "{error}");
    }
}
