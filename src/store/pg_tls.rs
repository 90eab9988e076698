//! TLS to PostgreSQL: `tokio-postgres`'s TLS hooks on rustls, the TLS stack the daemon
//! already builds (reqwest's, and the API's HTTPS), so no second TLS library is linked.
//!
//! The URL's `sslmode` decides: `require`, `verify-ca` or `verify-full` connect over TLS
//! or not at all; `disable`, `prefer` and no `sslmode` connect in plain text (as before
//! TLS was supported; libpq's `prefer` would try TLS without verifying it). Unlike libpq's
//! `require`, every TLS connection verifies the server's certificate and name, against
//! `sslrootcert=<PEM file>` when the URL gives one, else the public web roots: a payment
//! daemon does not talk to a database it cannot authenticate. `sslrootcert` is read here;
//! `tokio-postgres` never sees it.

use super::StoreError;
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// The connector of one database URL.
#[derive(Clone)]
pub(super) struct Tls {
    config: Arc<rustls::ClientConfig>,
}

/// Where and how to connect: what `tokio-postgres` reads, and the TLS connector.
#[derive(Clone)]
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
}

/// Splits `url` into what `tokio-postgres` reads (with `verify-ca`/`verify-full` spoken as
/// `require`, which it knows) and the TLS settings readerd reads itself.
pub(super) fn parse(url: &str) -> Result<Target, StoreError> {
    let invalid = |e: String| {
        StoreError::Engine(format!(
            "the PostgreSQL URL {} is invalid: {e}",
            super::redact_url(url)
        ))
    };
    let mut root_file = None;
    let cleaned = if let Some((base, query)) = url.split_once('?') {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("sslrootcert", v)) => root_file = Some(v.to_string()),
                Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
                _ => kept.push(pair),
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        url.to_string()
    };
    let mut config: tokio_postgres::Config =
        cleaned.parse().map_err(|e| invalid(format!("{e}")))?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer {
        // `prefer` (and no `sslmode`, which means it) stays in plain text, as before TLS was
        // supported: a server's self-signed certificate (Debian's default) must not turn a
        // working URL into a refused one. TLS is asked for with `require` or `verify-*`.
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &root_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| invalid(format!("sslrootcert {path}: {e}")))?;
            if certs.is_empty() {
                return Err(invalid(format!("sslrootcert {path}: no certificate")));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| invalid(format!("sslrootcert {path}: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Target {
        config,
        tls: Tls {
            config: Arc::new(tls),
        },
    })
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, io::Error> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Connect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

/// One connection's handshake.
pub(super) struct Connect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = self.connector.connect(self.name, stream).await?;
            Ok(Stream(s))
        })
    }
}

/// A TLS connection to the database.
pub(super) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // No SCRAM channel binding: the certificate is verified instead.
        ChannelBinding::none()
    }
}
