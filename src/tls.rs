//! TLS for remote administration: the rustls configurations of the daemon's
//! TCP listener and of `clinit --host` (TLS 1.3 only, a client certificate
//! required on both sides' CA), the identity a client certificate names,
//! and the small certificate authority behind `clinit ca` and `clinit cert`
//! (rcgen; no OpenSSL).
//!
//! Identity: the subject's common name (CN); a certificate without one is
//! named by its first DNS name, then its first URI (subject alternative
//! names). `clinit cert issue NAME` always sets CN=NAME.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The port of `listen` and `--host` when only a host is given.
pub const DEFAULT_PORT: u16 = 4072;
/// Where the daemon's files are, and the client's last resort.
pub const SYSTEM_DIR: &str = "/etc/clinit/tls";
/// The file names in a TLS directory (`clinit cert issue --out DIR`).
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// The CA key's file name in a CA directory (`clinit ca init DIR`).
pub const CA_KEY_FILE: &str = "ca.key";

/// What went wrong with certificates, keys or their files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {err}")]
    Read {
        what: &'static str,
        path: PathBuf,
        err: String,
    },
    #[error("{path}: {why}")]
    Bad { path: PathBuf, why: String },
    #[error("{0}")]
    Config(String),
    #[error("cannot write {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
    #[error("{path} exists; clinit does not overwrite {what} (remove it first{hint})")]
    Exists {
        path: PathBuf,
        what: &'static str,
        hint: &'static str,
    },
    #[error("{0}")]
    Usage(String),
}

impl TlsError {
    /// The exit status of `clinit ca`/`clinit cert`, and of a client or a
    /// daemon whose TLS files cannot be used.
    pub fn exit_code(&self) -> i32 {
        match self {
            TlsError::Read { .. } | TlsError::Bad { .. } | TlsError::Config(_) => 26,
            TlsError::Write { .. } => 10,
            TlsError::Exists { .. } => 14,
            TlsError::Usage(_) => 2,
        }
    }
}

/// The CA certificate, a certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    /// The three files in `dir` (`ca.pem`, `cert.pem`, `key.pem`).
    pub fn in_dir(dir: &Path) -> Files {
        Files {
            ca: dir.join(CA_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }

    /// The daemon's default: `/etc/clinit/tls/`.
    pub fn system() -> Files {
        Files::in_dir(Path::new(SYSTEM_DIR))
    }

    /// The client's first default: `~/.config/clinit/tls/` (of $HOME).
    pub fn user() -> Option<Files> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
        Some(Files::in_dir(&Path::new(&home).join(".config/clinit/tls")))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_path_buf(),
        err: e.to_string(),
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Bad {
            path: path.to_path_buf(),
            why: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Bad {
            path: path.to_path_buf(),
            why: format!("no certificate in it (the {what} must be PEM, BEGIN CERTIFICATE)"),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|e| TlsError::Read {
        what: "key",
        path: path.to_path_buf(),
        err: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| TlsError::Bad {
        path: path.to_path_buf(),
        why: format!("no usable private key in it: {e}"),
    })
}

fn roots(ca: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca, "CA certificate")? {
        roots.add(c).map_err(|e| TlsError::Bad {
            path: ca.to_path_buf(),
            why: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The daemon's side: TLS 1.3, its certificate, and a client certificate
/// signed by the CA required of every client. No session tickets: nothing
/// is sent to a client but replies.
pub fn server_config(f: &Files) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&f.ca)?, provider())
            .build()
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", f.ca.display())))?;
    let certs = load_certs(&f.cert, "certificate")?;
    let key = load_key(&f.key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Bad {
            path: f.key.clone(),
            why: format!("does not go with {}: {e}", f.cert.display()),
        })?;
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The client's side: the server's certificate must chain to `ca`; the
/// client presents `cert` and `key` when given (a daemon refuses a client
/// without one, and says so).
pub fn client_config(
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let cfg = match cert {
        Some((cert, key)) => {
            let certs = load_certs(cert, "certificate")?;
            b.with_client_auth_cert(certs, load_key(key)?)
                .map_err(|e| TlsError::Bad {
                    path: key.to_path_buf(),
                    why: format!("does not go with {}: {e}", cert.display()),
                })?
        }
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The server name a client checks the daemon's certificate against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} is not a host name: {e}"))
}

/// The identity of a client certificate: its CN, else its first DNS name,
/// else its first URI.
pub fn identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
    {
        return Some(cn.to_string());
    }
    let san = cert.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    let dns = names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    });
    dns.or_else(|| {
        names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
    })
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address: the host (no
/// brackets) and the port ([`DEFAULT_PORT`] when none is given).
pub fn parse_host(s: &str) -> Result<(String, u16), String> {
    parse_addr(s, false, DEFAULT_PORT)
}

/// [`parse_host`] for a listening address, where port 0 (any free port,
/// said in the log) is allowed.
pub fn parse_listen(s: &str) -> Result<(String, u16), String> {
    parse_addr(s, true, DEFAULT_PORT)
}

/// The port of `http_listen` when none is given: not the remote
/// administration's, so that the two never collide.
pub const HTTP_DEFAULT_PORT: u16 = 9472;

/// An `http_listen` address: as [`parse_listen`], port 9472 by default.
pub fn parse_http_listen(s: &str) -> Result<(String, u16), String> {
    parse_addr(s, true, HTTP_DEFAULT_PORT)
}

fn parse_addr(s: &str, zero_ok: bool, default: u16) -> Result<(String, u16), String> {
    let bad = |why: &str| format!("{s:?}: {why} (HOST, HOST:PORT or [IPV6]:PORT)");
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| zero_ok || *p != 0)
            .ok_or_else(|| bad(&format!("{p:?} is not a port")))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
        let p = match after {
            "" => default,
            a => port(a.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?)?,
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address between [ ]"));
        }
        return Ok((host.to_string(), p));
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((s.to_string(), default));
    }
    let (host, p) = match s.rsplit_once(':') {
        Some((h, p)) => (h, port(p)?),
        None => (s, default),
    };
    if host.is_empty()
        || host.contains(':')
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("not a host"));
    }
    Ok((host.to_string(), p))
}

// ---------------------------------------------------------------------------
// The certificate authority.

/// Write `data` to `path` (mode `mode`) atomically
/// ([`crate::store::write_atomic_mode`]); an existing `path` is kept
/// unless `force`.
fn write_new(
    path: &Path,
    data: &[u8],
    mode: u32,
    force: bool,
    what: &'static str,
) -> Result<(), TlsError> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(TlsError::Exists {
            path: path.to_path_buf(),
            what,
            hint: if what == "a CA" {
                ""
            } else {
                ", or give --force"
            },
        });
    }
    crate::store::write_atomic_mode(path, data, mode).map_err(|err| TlsError::Write {
        path: path.to_path_buf(),
        err,
    })
}

fn make_dir(dir: &Path) -> Result<(), TlsError> {
    crate::config::files::dirs(dir).map_err(|err| TlsError::Write {
        path: dir.to_path_buf(),
        err,
    })
}

fn random_serial() -> rcgen::SerialNumber {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b[0] &= 0x7f; // positive
    rcgen::SerialNumber::from_slice(&b)
}

/// A date `YYYY-MM-DD` (midnight UTC).
pub fn parse_date(s: &str) -> Result<time::OffsetDateTime, String> {
    let bad = || format!("{s:?} is not a date YYYY-MM-DD");
    let mut it = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let d: u8 = d.parse().map_err(|_| bad())?;
    let month = time::Month::try_from(m).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(y, month, d).map_err(|_| bad())?;
    Ok(date.midnight().assume_utc())
}

/// What `clinit ca init` made.
pub struct CaMade {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub name: String,
}

/// `clinit ca init DIR`: a new CA key (`ca.key`, 0600) and self-signed
/// certificate (`ca.pem`), valid `days` days. Never overwrites a CA.
pub fn ca_init(dir: &Path, name: Option<&str>, days: u32) -> Result<CaMade, TlsError> {
    let name = match name {
        Some(n) => check_name(n)?.to_string(),
        None => {
            let h = crate::config::hostname();
            format!("clinit CA {}", if h.is_empty() { "localhost" } else { &h })
        }
    };
    let (cert, key) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
    for p in [&cert, &key] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(TlsError::Exists {
                path: p.clone(),
                what: "a CA",
                hint: "",
            });
        }
    }
    make_dir(dir)?;
    let kp = rcgen::KeyPair::generate().map_err(|e| TlsError::Config(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.clone());
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.serial_number = Some(random_serial());
    let c = params
        .self_signed(&kp)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    write_new(&key, kp.serialize_pem().as_bytes(), 0o600, false, "a CA")?;
    write_new(&cert, c.pem().as_bytes(), 0o644, false, "a CA")?;
    Ok(CaMade { cert, key, name })
}

/// A name for a certificate's CN: 1-64 characters, none a control
/// character.
fn check_name(n: &str) -> Result<&str, TlsError> {
    if n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
        return Err(TlsError::Usage(format!(
            "{n:?} is not a certificate name: 1 to 64 characters, no control characters"
        )));
    }
    Ok(n)
}

/// What `clinit cert issue` is asked for.
pub struct Issue<'a> {
    pub ca_dir: &'a Path,
    pub name: &'a str,
    /// Host names and addresses of a server certificate (empty: a user's).
    pub servers: &'a [String],
    pub days: u32,
    pub not_before: Option<time::OffsetDateTime>,
    pub not_after: Option<time::OffsetDateTime>,
    pub out: &'a Path,
    pub force: bool,
}

/// `clinit cert issue`: a key (`key.pem`, 0600) and a certificate
/// (`cert.pem`) signed by the CA in `ca_dir`, and a copy of the CA's
/// certificate (`ca.pem`), in `out`: a directory the daemon or a client
/// can use as it is. Returns the paths written.
pub fn cert_issue(a: &Issue) -> Result<Vec<PathBuf>, TlsError> {
    let name = check_name(a.name)?;
    let ca_pem_path = a.ca_dir.join(CA_FILE);
    let ca_key_path = a.ca_dir.join(CA_KEY_FILE);
    let ca_pem = std::fs::read_to_string(&ca_pem_path).map_err(|e| TlsError::Read {
        what: "CA certificate",
        path: ca_pem_path.clone(),
        err: e.to_string(),
    })?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(|e| TlsError::Read {
        what: "CA key",
        path: ca_key_path.clone(),
        err: e.to_string(),
    })?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Bad {
        path: ca_key_path.clone(),
        why: format!("not a usable key: {e}"),
    })?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| TlsError::Bad {
        path: ca_pem_path.clone(),
        why: format!("not a usable CA certificate: {e}"),
    })?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    for s in a.servers {
        let san = match s.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(s.clone().try_into().map_err(|e| {
                TlsError::Usage(format!("--server {s:?} is not a host name or address: {e}"))
            })?),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if !a.servers.is_empty() {
        // A node's certificate serves, and administers the others.
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = a.not_before.unwrap_or(now - time::Duration::hours(1));
    params.not_after = a
        .not_after
        .unwrap_or(params.not_before + time::Duration::days(i64::from(a.days)));
    if params.not_after <= params.not_before {
        return Err(TlsError::Usage(
            "the certificate would end before it starts (--not-before, --not-after, --days)".into(),
        ));
    }
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let kp = rcgen::KeyPair::generate().map_err(|e| TlsError::Config(e.to_string()))?;
    let cert = params
        .signed_by(&kp, &issuer)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    make_dir(a.out)?;
    let f = Files::in_dir(a.out);
    for p in [&f.cert, &f.key] {
        if !a.force && std::fs::symlink_metadata(p).is_ok() {
            return Err(TlsError::Exists {
                path: p.clone(),
                what: "a certificate or key",
                hint: ", or give --force",
            });
        }
    }
    write_new(
        &f.key,
        kp.serialize_pem().as_bytes(),
        0o600,
        a.force,
        "a key",
    )?;
    write_new(
        &f.cert,
        cert.pem().as_bytes(),
        0o644,
        a.force,
        "a certificate",
    )?;
    // The CA's certificate beside it; the same CA's may be replaced.
    write_new(&f.ca, ca_pem.as_bytes(), 0o644, true, "a CA certificate")?;
    Ok(vec![f.cert, f.key, f.ca])
}

/// `clinit cert show FILE`: subject, identity, names, validity, issuer.
pub fn cert_show(path: &Path) -> Result<String, TlsError> {
    use std::fmt::Write;
    let certs = load_certs(path, "certificate")?;
    let mut out = String::new();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (i, der) in certs.iter().enumerate() {
        let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Bad {
            path: path.to_path_buf(),
            why: format!("certificate {} cannot be read: {e}", i + 1),
        })?;
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "subject:    {}", c.subject());
        let _ = writeln!(
            out,
            "identity:   {}",
            identity(der).unwrap_or_else(|| "(none: no CN, DNS name or URI)".into())
        );
        let mut names = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for n in &san.value.general_names {
                use x509_parser::extensions::GeneralName;
                match n {
                    GeneralName::DNSName(d) => names.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => names.push(format!("URI:{u}")),
                    GeneralName::IPAddress(ip) => names.push(match ip.len() {
                        4 => format!(
                            "IP:{}",
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                        ),
                        16 => format!(
                            "IP:{}",
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                        ),
                        _ => "IP:?".into(),
                    }),
                    other => names.push(format!("{other}")),
                }
            }
        }
        let _ = writeln!(
            out,
            "names:      {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        );
        let (nb, na) = (c.validity().not_before, c.validity().not_after);
        let state = if now < nb.timestamp() {
            "NOT YET VALID"
        } else if now > na.timestamp() {
            "EXPIRED"
        } else {
            "valid"
        };
        let _ = writeln!(out, "valid:      {nb} to {na} ({state})");
        let _ = writeln!(out, "issuer:     {}", c.issuer());
        let mut uses = Vec::new();
        if c.is_ca() {
            uses.push("CA");
        }
        if let Ok(Some(eku)) = c.extended_key_usage() {
            if eku.value.server_auth {
                uses.push("server");
            }
            if eku.value.client_auth {
                uses.push("client");
            }
        }
        let _ = writeln!(
            out,
            "use:        {}",
            if uses.is_empty() {
                "(any)".to_string()
            } else {
                uses.join(", ")
            }
        );
        let _ = writeln!(out, "serial:     {}", c.raw_serial_as_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        type Row<'a> = (&'a str, Result<(&'a str, u16), ()>);
        let rows: &[Row] = &[
            ("node1", Ok(("node1", DEFAULT_PORT))),
            ("node1:99", Ok(("node1", 99))),
            ("127.0.0.1", Ok(("127.0.0.1", DEFAULT_PORT))),
            ("127.0.0.1:5000", Ok(("127.0.0.1", 5000))),
            ("::1", Ok(("::1", DEFAULT_PORT))),
            ("[::1]", Ok(("::1", DEFAULT_PORT))),
            ("[::1]:7", Ok(("::1", 7))),
            ("[::1]x", Err(())),
            ("[node1]:7", Err(())),
            ("node1:0", Err(())),
            ("", Err(())),
            ("node1:http", Err(())),
            ("node1:70000", Err(())),
            (":5", Err(())),
            ("", Err(())),
            ("a b", Err(())),
        ];
        for (s, want) in rows {
            let got = parse_host(s);
            match want {
                Ok((h, p)) => assert_eq!(got, Ok((h.to_string(), *p)), "{s:?}"),
                Err(()) => assert!(got.is_err(), "{s:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn listen_forms_allow_port_zero() {
        assert_eq!(parse_listen("127.0.0.1:0"), Ok(("127.0.0.1".into(), 0)));
        assert_eq!(parse_listen("[::]"), Ok(("::".into(), DEFAULT_PORT)));
        assert!(parse_listen("127.0.0.1:x").is_err());
        // http_listen has its own default port, never the listener's.
        assert_eq!(
            parse_http_listen("127.0.0.1"),
            Ok(("127.0.0.1".into(), HTTP_DEFAULT_PORT))
        );
        assert_eq!(parse_http_listen("[::1]"), Ok(("::1".into(), 9472)));
        assert_eq!(parse_http_listen("::1"), Ok(("::1".into(), 9472)));
        assert_eq!(parse_http_listen("h:80"), Ok(("h".into(), 80)));
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_date("2020-02-29").unwrap().unix_timestamp(),
            1_582_934_400
        );
        for bad in ["2021-02-29", "2020-13-01", "2020-1", "x", "2020-01-01-01"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_for_certificates() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("node1.example.org").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    /// A CA issues a user's and a server's certificate; their identities,
    /// names, uses and key modes are as asked, and the configs load them.
    #[test]
    fn a_ca_issues_certificates_that_the_configs_accept() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        let made = ca_init(&ca, Some("test CA"), 30).unwrap();
        assert_eq!(made.name, "test CA");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&made.key), 0o600);
        assert!(matches!(
            ca_init(&ca, None, 30),
            Err(TlsError::Exists { .. })
        ));
        let user = d.path().join("alice");
        fn issue<'a>(
            ca: &'a Path,
            name: &'a str,
            servers: &'a [String],
            out: &'a Path,
        ) -> Issue<'a> {
            Issue {
                ca_dir: ca,
                name,
                servers,
                days: 10,
                not_before: None,
                not_after: None,
                out,
                force: false,
            }
        }
        cert_issue(&issue(&ca, "alice", &[], &user)).unwrap();
        let f = Files::in_dir(&user);
        assert_eq!(mode(&f.key), 0o600);
        let der = load_certs(&f.cert, "certificate").unwrap();
        assert_eq!(identity(&der[0]).as_deref(), Some("alice"));
        let shown = cert_show(&f.cert).unwrap();
        assert!(shown.contains("identity:   alice"), "{shown}");
        assert!(shown.contains("(valid)"), "{shown}");
        assert!(shown.contains("use:        client\n"), "{shown}");
        assert!(shown.contains("test CA"), "{shown}");
        assert!(matches!(
            cert_issue(&issue(&ca, "alice", &[], &user)),
            Err(TlsError::Exists { .. })
        ));
        let srv = d.path().join("srv");
        let names = ["node1".to_string(), "127.0.0.1".to_string()];
        cert_issue(&issue(&ca, "node1", &names, &srv)).unwrap();
        let shown = cert_show(&srv.join(CERT_FILE)).unwrap();
        assert!(shown.contains("DNS:node1, IP:127.0.0.1"), "{shown}");
        assert!(shown.contains("use:        server, client"), "{shown}");
        server_config(&Files::in_dir(&srv)).unwrap();
        client_config(&f.ca, Some((&f.cert, &f.key))).unwrap();
        // A key that is not the certificate's.
        let err = client_config(&f.ca, Some((&f.cert, &srv.join(KEY_FILE)))).unwrap_err();
        assert!(err.to_string().contains("does not go with"), "{err}");
    }
}
