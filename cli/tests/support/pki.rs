//! Certificates made for one test with rcgen: a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate signed by the same CA, and a second, unrelated CA (the one a
//! client must not trust the server with). Written as PEM files into the test's folder.
#![allow(dead_code)] // used by the TLS tests only

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed none of the above.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str], usages: Vec<ExtendedKeyUsagePurpose>, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, stem);
    params.extended_key_usages = usages;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}-key.pem")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        Self::for_servers(dir, &["127.0.0.1", "localhost"])
    }

    /// Like `new`, with a server certificate for `names` (host names or IP addresses).
    pub fn for_servers(dir: &Path, names: &[&str]) -> Pki {
        let authority = ca("acufarm test CA");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, authority.pem()).unwrap();
        let (server_cert, server_key) = leaf(&authority, names, vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth], dir, "server");
        let (client_cert, client_key) = leaf(&authority, &["worker.acufarm.test"], vec![ExtendedKeyUsagePurpose::ClientAuth], dir, "client");
        let other_ca = dir.join("other-ca.pem");
        std::fs::write(&other_ca, ca("an unrelated CA").pem()).unwrap();
        Pki { ca: ca_path, server_cert, server_key, client_cert, client_key, other_ca }
    }
}
