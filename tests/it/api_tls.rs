//! HTTPS on the API (`[api.tls]`), with certificates made at test time (a venue CA, the
//! server's certificate, a till's client certificate): HTTPS with the right CA works, plain
//! HTTP to the port does not, a client without a certificate fails the handshake when mTLS
//! is on, a reload (SIGHUP to the real binary, or the function it calls) swaps the
//! certificate for new connections while an open one keeps working, and unusable files are
//! refused with exit 64, naming the file.

use crate::common::TestEnv;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use readerd::config::ApiTls;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The name the server's certificate is for (resolved to the daemon's address).
const HOST: &str = "readerd.test";

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A certificate (PEM) and its key (PEM) signed by this CA.
    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose, expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        // The server's is also for the loopback address (the command line's test uses it).
        let names = vec![name.to_string(), "127.0.0.1".to_string()];
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A server certificate of `ca` in `dir` (`server-<tag>.pem`, `.key`).
fn server_files(dir: &Path, ca: &Ca, tag: &str) -> ApiTls {
    let (cert, key) = ca.issue(HOST, ExtendedKeyUsagePurpose::ServerAuth, false);
    ApiTls {
        cert_file: write(dir, &format!("server-{tag}.pem"), &cert),
        key_file: write(dir, &format!("server-{tag}.key"), &key),
        client_ca_file: None,
    }
}

async fn tls_env(tls: ApiTls) -> TestEnv {
    TestEnv::builder()
        .configure(move |c| c.api.tls = Some(tls))
        .start()
        .await
}

fn client(ca: &Ca, identity: Option<(&str, &str)>, addr: SocketAddr) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .resolve(HOST, addr)
        .tls_info(true);
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://{HOST}:{}{path}", addr.port())
}

/// The certificate the server showed on the connection that carried `resp`.
fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn https_with_the_venue_ca_works_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Venue CA");
    let files = server_files(dir.path(), &ca, "a");
    let env = tls_env(files).await;
    let addr = env.daemon.as_ref().unwrap().addr;

    let http = client(&ca, None, addr);
    let resp = http
        .get(url(addr, "/v1/readers"))
        .bearer_auth(&env.admin_token)
        .send()
        .await;
    let resp = resp.expect("HTTPS with the venue CA works");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("request-id"));
    // The token is still required.
    let resp = http.get(url(addr, "/v1/readers")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must be refused: {plain:?}");
    // A client that does not trust the venue CA refuses the server.
    let other = client(&Ca::new("Another CA"), None, addr);
    assert!(other.get(url(addr, "/healthz")).send().await.is_err());
    env.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_a_client_without_its_certificate_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Venue CA");
    let mut files = server_files(dir.path(), &ca, "a");
    files.client_ca_file = Some(write(dir.path(), "venue-ca.pem", &ca.cert.pem()));
    let env = tls_env(files).await;
    let addr = env.daemon.as_ref().unwrap().addr;

    let anonymous = client(&ca, None, addr);
    let resp = anonymous.get(url(addr, "/healthz")).send().await;
    assert!(resp.is_err(), "no client certificate: {resp:?}");
    // A certificate from another CA is refused too.
    let stranger = Ca::new("Another CA");
    let (cert, key) = stranger.issue("till-9", ExtendedKeyUsagePurpose::ClientAuth, false);
    let resp = client(&ca, Some((&cert, &key)), addr)
        .get(url(addr, "/healthz"))
        .send()
        .await;
    assert!(resp.is_err(), "a certificate of another CA: {resp:?}");

    let (cert, key) = ca.issue("till-1", ExtendedKeyUsagePurpose::ClientAuth, false);
    let till = client(&ca, Some((&cert, &key)), addr);
    let resp = till
        .get(url(addr, "/v1/readers"))
        .bearer_auth(&env.admin_token)
        .send()
        .await
        .expect("a till with its certificate gets through");
    assert_eq!(resp.status(), 200);
    // The certificate does not replace the token.
    let resp = till.get(url(addr, "/v1/readers")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // The command line, with the venue CA and the till's certificate.
    let d = dir.path();
    let (ca_file, cert_file, key_file) = (
        write(d, "ca.pem", &ca.cert.pem()),
        write(d, "till-1.pem", &cert),
        write(d, "till-1.key", &key),
    );
    let cli = |with_cert: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_readerd"));
        cmd.args(["readers", "list", "--json"])
            .env("READERD_API", format!("https://127.0.0.1:{}", addr.port()))
            .env("READERD_TOKEN", &env.admin_token)
            .env("READERD_CA_FILE", &ca_file);
        if with_cert {
            cmd.env("READERD_CLIENT_CERT", &cert_file)
                .env("READERD_CLIENT_KEY", &key_file);
        }
        cmd.output()
    };
    let out = cli(true).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).trim().starts_with('['));
    let out = cli(false).await.unwrap();
    assert_ne!(out.status.code(), Some(0), "no client certificate");
    env.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Venue CA");
    let files = server_files(dir.path(), &ca, "a");
    let first = der(&std::fs::read_to_string(&files.cert_file).unwrap());
    let env = tls_env(files).await;
    let handle = env.daemon.as_ref().unwrap();
    let addr = handle.addr;

    let open = client(&ca, None, addr);
    let resp = open.get(url(addr, "/healthz")).send().await.unwrap();
    assert_eq!(peer_cert(&resp), first);
    resp.bytes().await.unwrap();

    // What SIGHUP does: the files are read again (here, new ones).
    let renewed = server_files(dir.path(), &ca, "b");
    let second = der(&std::fs::read_to_string(&renewed.cert_file).unwrap());
    assert_ne!(first, second);
    handle
        .tls
        .as_ref()
        .expect("TLS is on")
        .reload(&renewed)
        .unwrap();

    // A new connection sees the new certificate.
    let resp = client(&ca, None, addr)
        .get(url(addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        peer_cert(&resp),
        second,
        "a new connection gets the new certificate"
    );
    // The open connection was not dropped: it still answers, on the old certificate.
    let resp = open.get(url(addr, "/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        peer_cert(&resp),
        first,
        "the open connection is the same one"
    );

    // A bad reload changes nothing.
    let broken = ApiTls {
        cert_file: dir.path().join("missing.pem"),
        ..renewed.clone()
    };
    assert!(handle.tls.as_ref().unwrap().reload(&broken).is_err());
    let resp = client(&ca, None, addr)
        .get(url(addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(peer_cert(&resp), second);
    env.stop().await;
}

#[test]
fn unusable_files_are_refused_with_64_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("Venue CA");
    let good = server_files(d, &ca, "a");
    let other = server_files(d, &ca, "b");
    let (expired_cert, expired_key) = ca.issue(HOST, ExtendedKeyUsagePurpose::ServerAuth, true);
    let expired = ApiTls {
        cert_file: write(d, "expired.pem", &expired_cert),
        key_file: write(d, "expired.key", &expired_key),
        client_ca_file: None,
    };
    let missing = d.join("nothing.pem");
    let cases: Vec<(ApiTls, &Path, &str)> = vec![
        (
            ApiTls {
                cert_file: missing.clone(),
                ..good.clone()
            },
            &missing,
            "no such file",
        ),
        (
            ApiTls {
                key_file: other.key_file.clone(),
                ..good.clone()
            },
            &other.key_file,
            "does not match the certificate",
        ),
        (expired.clone(), &expired.cert_file, "expired"),
        (
            ApiTls {
                client_ca_file: Some(missing.clone()),
                ..good.clone()
            },
            &missing,
            "no such file",
        ),
    ];
    let store = d.join("store");
    for (tls, file, reason) in cases {
        let mut toml = format!(
            "[store]\npath = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[api.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            store.display().to_string(),
            tls.cert_file.display().to_string(),
            tls.key_file.display().to_string(),
        );
        if let Some(ca) = &tls.client_ca_file {
            toml.push_str(&format!(
                "client_ca_file = {:?}\n",
                ca.display().to_string()
            ));
        }
        let path = write(d, "readerd.toml", &toml);
        for command in ["check-config", "run"] {
            let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
                .args([command, "--config", path.to_str().unwrap()])
                .env("READERD_STRIPE_SECRET_KEY", "sk_test_env")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{command}: {err}");
            assert!(
                err.contains(&file.display().to_string()) && err.contains(reason),
                "{command} names {} and says {reason:?}: {err}",
                file.display()
            );
        }
    }
    assert!(!store.exists(), "nothing is opened for a refused config");
    // The good files pass.
    let toml = format!(
        "[store]\npath = {:?}\n[api.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        store.display().to_string(),
        good.cert_file.display().to_string(),
        good.key_file.display().to_string(),
    );
    let path = write(d, "readerd.toml", &toml);
    let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("READERD_STRIPE_SECRET_KEY", "sk_test_env")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sighup_to_the_daemon_swaps_the_certificate() {
    use crate::ops_lifecycle::{api_addr, signal, terminate, NotifySocket, Setup};
    let setup = Setup::new();
    let d = setup.dir.path();
    let ca = Ca::new("Venue CA");
    let (cert, key) = ca.issue(HOST, ExtendedKeyUsagePurpose::ServerAuth, false);
    let (cert_file, key_file) = (write(d, "server.pem", &cert), write(d, "server.key", &key));
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str(&format!(
        "[api.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert_file.display().to_string(),
        key_file.display().to_string()
    ));
    std::fs::write(&setup.config, config).unwrap();
    let notify = NotifySocket::new(d);
    let mut child = setup.spawn(&notify);
    let addr: SocketAddr = api_addr(&notify.expect("READY=1", &mut child))
        .parse()
        .unwrap();

    let open = client(&ca, None, addr);
    let resp = open.get(url(addr, "/healthz")).send().await.unwrap();
    assert_eq!(peer_cert(&resp), der(&cert));
    resp.bytes().await.unwrap();

    // Renewed in place, as an operator would, then `systemctl reload`.
    let (renewed, renewed_key) = ca.issue(HOST, ExtendedKeyUsagePurpose::ServerAuth, false);
    write(d, "server.pem", &renewed);
    write(d, "server.key", &renewed_key);
    signal(&child, "-HUP");
    notify.expect("RELOADING=1", &mut child);
    notify.expect("READY=1", &mut child);

    let resp = client(&ca, None, addr)
        .get(url(addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        peer_cert(&resp),
        der(&renewed),
        "a new connection gets the new certificate"
    );
    let resp = open.get(url(addr, "/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the open connection still answers");
    assert_eq!(peer_cert(&resp), der(&cert));
    let logs = terminate(child);
    assert!(logs.contains("TLS certificates reloaded"), "{logs}");
}
