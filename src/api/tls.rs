//! HTTPS on the API (`[api.tls]`): the certificate, its key and the optional client CA
//! checked and loaded ([`load`]), a server configuration that a reload swaps for new
//! connections ([`Tls`]), and the listener that serves it ([`TlsListener`]).
//!
//! Handshakes run in their own tasks, so a slow or hostile client never holds up the
//! accept loop; a connection that does not complete a handshake within
//! [`HANDSHAKE_TIMEOUT`] (a plain-HTTP request, a client without the certificate mTLS asks
//! for) is closed. A reload builds a new `rustls::ServerConfig` and swaps it in: the next
//! connection gets it, open connections keep theirs.
//!
//! The daemon's own liveness probe cannot present a client certificate, so it reaches the
//! server through an in-memory connection handed to the same accept queue
//! ([`LocalConnector`]): it proves that the HTTP server and the router still answer.

use crate::config::ApiTls;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS file that cannot be used, named with its key in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("api.tls.{key} {}: {reason}", file.display())]
pub struct TlsError {
    pub key: &'static str,
    pub file: PathBuf,
    pub reason: String,
}

fn err(key: &'static str, file: &Path, reason: impl Into<String>) -> TlsError {
    TlsError {
        key,
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_certs(key: &'static str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !file.exists() {
        return Err(err(key, file, "no such file"));
    }
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(key, file, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err(key, file, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// Checks and loads `[api.tls]`: every file readable, the certificate within its validity
/// period, the key matching it, the client CA usable.
pub fn load(tls: &ApiTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs("cert_file", &tls.cert_file)?;
    validity(&chain[0], SystemTime::now()).map_err(|r| err("cert_file", &tls.cert_file, r))?;
    if !tls.key_file.exists() {
        return Err(err("key_file", &tls.key_file, "no such file"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| {
        err(
            "key_file",
            &tls.key_file,
            format!("not a PEM private key: {e}"),
        )
    })?;
    let mismatch = || {
        err(
            "key_file",
            &tls.key_file,
            format!(
                "does not match the certificate in {}",
                tls.cert_file.display()
            ),
        )
    };
    let certified = rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => mismatch(),
            e => err("key_file", &tls.key_file, format!("unusable key: {e}")),
        })?;
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(mismatch());
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("cert_file", &tls.cert_file, e.to_string()))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("client_ca_file", ca)? {
                roots
                    .add(c)
                    .map_err(|e| err("client_ca_file", ca, format!("not a CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err("client_ca_file", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err("key_file", &tls.key_file, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server configuration in force; a reload swaps it for the next connections.
#[derive(Debug)]
pub struct Tls {
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    pub fn new(tls: &ApiTls) -> Result<Self, TlsError> {
        Ok(Tls {
            current: RwLock::new(load(tls)?),
        })
    }

    /// Loads the files again; on any problem the configuration in force stays.
    pub fn reload(&self, tls: &ApiTls) -> Result<(), TlsError> {
        let new = load(tls)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A connection the API serves: a TLS one, or the daemon's own in-memory probe.
pub enum ApiStream {
    Tls(Box<TlsStream<TcpStream>>),
    Local(DuplexStream),
}

impl AsyncRead for ApiStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ApiStream::Local(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ApiStream::Local(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ApiStream::Local(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ApiStream::Local(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

type Accepted = (ApiStream, SocketAddr);

/// The API's listener with TLS: connections whose handshake completed, in arrival order.
pub struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<Accepted>,
}

/// Hands the server an in-memory connection (the liveness probe).
#[derive(Clone, Debug)]
pub struct LocalConnector {
    local: SocketAddr,
    tx: mpsc::Sender<Accepted>,
}

impl LocalConnector {
    /// A new connection to the server, or `None` once it has stopped.
    pub async fn connect(&self) -> Option<DuplexStream> {
        let (client, server) = tokio::io::duplex(16 * 1024);
        self.tx
            .send((ApiStream::Local(server), self.local))
            .await
            .ok()?;
        Some(client)
    }
}

/// Serves TLS on `tcp`: accepts, runs each handshake in its own task, and queues the
/// connections that complete one. The accept task ends when the listener is dropped.
pub fn listen(tcp: TcpListener, tls: Arc<Tls>) -> io::Result<(TlsListener, LocalConnector)> {
    let local = tcp.local_addr()?;
    let (tx, rx) = mpsc::channel::<Accepted>(64);
    let connector = LocalConnector {
        local,
        tx: tx.clone(),
    };
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait, as axum's own loop does.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send((ApiStream::Tls(Box::new(s)), peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Ok((TlsListener { local, rx }, connector))
}

impl axum::serve::Listener for TlsListener {
    type Io = ApiStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> Accepted {
        match self.rx.recv().await {
            Some(a) => a,
            // The accept task is gone only when the runtime shuts down.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// `Ok` when `now` lies within the certificate's validity period; the reason otherwise.
pub fn validity(cert: &[u8], now: SystemTime) -> Result<(), String> {
    let (not_before, not_after) =
        der::validity(cert).ok_or("cannot read the certificate's validity period")?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let show = |t: i64| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
    };
    if now > not_after {
        return Err(format!("the certificate expired on {}", show(not_after)));
    }
    if now < not_before {
        return Err(format!(
            "the certificate is not valid before {}",
            show(not_before)
        ));
    }
    Ok(())
}

/// Just enough DER to read a certificate's validity period (RFC 5280, 4.1).
mod der {
    /// One TLV: (tag, contents, the rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    /// (notBefore, notAfter) in Unix seconds.
    pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
        let (0x30, cert, _) = tlv(cert)? else {
            return None;
        };
        let (0x30, tbs, _) = tlv(cert)? else {
            return None;
        };
        let mut rest = tbs;
        // [0] version (optional), serialNumber, signature, issuer.
        let (tag, _, r) = tlv(rest)?;
        rest = r;
        if tag == 0xa0 {
            rest = tlv(rest)?.2;
        }
        rest = tlv(rest)?.2;
        rest = tlv(rest)?.2;
        let (0x30, validity, _) = tlv(rest)? else {
            return None;
        };
        let (t1, nb, r) = tlv(validity)?;
        let (t2, na, _) = tlv(r)?;
        Some((time(t1, nb)?, time(t2, na)?))
    }

    /// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
    fn time(tag: u8, v: &[u8]) -> Option<i64> {
        let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
        let (year, s) = match tag {
            0x17 => {
                let y: i64 = s.get(..2)?.parse().ok()?;
                (if y >= 50 { 1900 + y } else { 2000 + y }, s.get(2..)?)
            }
            0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
            _ => return None,
        };
        let n = |i: usize| -> Option<i64> { s.get(i..i + 2)?.parse().ok() };
        let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
        Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn times_read_as_unix_seconds() {
            assert_eq!(super::time(0x17, b"700101000000Z"), Some(0));
            assert_eq!(super::time(0x17, b"231114221320Z"), Some(1_700_000_000));
            assert_eq!(super::time(0x18, b"20231114221320Z"), Some(1_700_000_000));
            assert_eq!(super::time(0x18, b"20231114221320"), None);
        }
    }
}
