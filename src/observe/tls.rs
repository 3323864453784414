//! `sslmode` and `sslrootcert` with libpq's meaning, over rustls (ring provider).
//!
//! tokio-postgres understands only `disable|prefer|require` and ignores `sslrootcert`,
//! so both are taken out of the connection string here and applied as libpq does
//! (<https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-PROTECTION>):
//! `prefer` and `require` encrypt without verifying the server (but `require` with an
//! `sslrootcert` behaves like `verify-ca`), `verify-ca` checks the chain against
//! `sslrootcert`, `verify-full` also checks the host name.

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the connection string asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa { root_cert: String },
    VerifyFull { root_cert: String },
}

/// Splits `sslmode`/`sslrootcert` out of a connection string (URL or key=value).
pub fn split_tls(url: &str) -> Result<(String, TlsMode), String> {
    let mut mode = None;
    let mut root = None;
    // Keeps every parameter but the two TLS ones, which it records.
    let mut keep = |kv: &&str| match kv.split_once('=') {
        Some(("sslmode", v)) => {
            mode = Some(v.to_owned());
            false
        }
        Some(("sslrootcert", v)) => {
            root = Some(v.to_owned());
            false
        }
        _ => true,
    };
    let rest = if let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) {
        let kept: Vec<&str> = query.split('&').filter(&mut keep).collect();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        url.split_whitespace().filter(&mut keep).collect::<Vec<_>>().join(" ")
    };
    let need_root = |m: &str| {
        root.clone()
            .ok_or_else(|| format!("sslmode={m} needs sslrootcert (the CA file to trust)"))
    };
    let tls = match (mode.as_deref().unwrap_or("prefer"), &root) {
        ("disable", _) => TlsMode::Disable,
        ("allow" | "prefer", _) => TlsMode::Prefer,
        // libpq: require with a root certificate verifies the chain, like verify-ca.
        ("require", Some(r)) => TlsMode::VerifyCa { root_cert: r.clone() },
        ("require", None) => TlsMode::Require,
        ("verify-ca", _) => TlsMode::VerifyCa {
            root_cert: need_root("verify-ca")?,
        },
        ("verify-full", _) => TlsMode::VerifyFull {
            root_cert: need_root("verify-full")?,
        },
        (other, _) => return Err(format!("unknown sslmode {other:?}")),
    };
    Ok((rest, tls))
}

impl TlsMode {
    /// The mode tokio-postgres negotiates with.
    pub fn ssl_mode(&self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }

    /// The rustls connector, or `None` for `disable`.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self {
            TlsMode::Disable => return Ok(None),
            TlsMode::Prefer | TlsMode::Require => Arc::new(Unverified(provider.clone())),
            TlsMode::VerifyCa { root_cert } => Arc::new(ChainOnly(webpki_verifier(root_cert, provider.clone())?)),
            TlsMode::VerifyFull { root_cert } => webpki_verifier(root_cert, provider.clone())?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(MakeRustlsConnect::new(config)))
    }
}

fn webpki_verifier(root_cert: &str, provider: Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(root_cert).map_err(|e| format!("sslrootcert {root_cert}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("sslrootcert {root_cert}: {e}"))?;
        roots.add(cert).map_err(|e| format!("sslrootcert {root_cert}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {root_cert}: no certificate in it"));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())
}

/// `prefer`/`require`: encrypted, server not authenticated (libpq's meaning). The
/// handshake signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

/// `verify-ca`: the chain must lead to the root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_with_libpq_meaning() {
        let (rest, mode) =
            split_tls("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3").unwrap();
        assert_eq!(rest, "postgres://u@h/db?connect_timeout=3");
        assert_eq!(
            mode,
            TlsMode::VerifyFull {
                root_cert: "/ca.pem".into()
            }
        );
        assert_eq!(split_tls("postgres://u@h/db").unwrap().1, TlsMode::Prefer);
        assert_eq!(
            split_tls("host=h sslmode=require sslrootcert=/ca.pem").unwrap(),
            (
                "host=h".into(),
                TlsMode::VerifyCa {
                    root_cert: "/ca.pem".into()
                }
            )
        );
        assert!(
            split_tls("postgres://u@h/db?sslmode=verify-ca")
                .unwrap_err()
                .contains("needs sslrootcert")
        );
        assert!(split_tls("postgres://u@h/db?sslmode=bogus").is_err());
    }
}
