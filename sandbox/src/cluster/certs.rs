//! The certificates a local control plane needs, made with rcgen: a cluster CA
//! (serving cert of the API server, client certs for the admin and the
//! controller manager), a front-proxy CA and its client (as kubeadm makes them:
//! the API server publishes that CA in `kube-system/extension-apiserver-authentication`,
//! which the controller manager's own authentication reads), and the
//! service-account signing key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("making a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its key, as PEM, and where they were written.
pub struct Pem {
    pub cert: String,
    pub key: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Every file the control plane's flags name, all under one directory.
pub struct Pki {
    pub ca: Pem,
    pub apiserver: Pem,
    pub admin: Pem,
    pub controller_manager: Pem,
    pub front_proxy_ca: Pem,
    pub front_proxy_client: Pem,
    /// The service-account token signing key (private half in `key_path`, public in `cert_path`).
    pub service_account: Pem,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, CertError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| CertError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn ca(dir: &Path, name: &str, common_name: &str) -> Result<(Ca, Pem), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    let pem = Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        cert_path: write(dir, &format!("{name}.crt"), &cert.pem())?,
        key_path: write(dir, &format!("{name}.key"), &key.serialize_pem())?,
    };
    Ok((
        Ca {
            issuer: Issuer::new(params, key),
        },
        pem,
    ))
}

/// A leaf signed by `ca`: `organization` becomes the user's group in Kubernetes.
fn leaf(
    dir: &Path,
    ca: &Ca,
    name: &str,
    common_name: &str,
    organization: Option<&str>,
    server: bool,
) -> Result<Pem, CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    if server {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        ];
        for dns in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ] {
            params.subject_alt_names.push(SanType::DnsName(dns.try_into()?));
        }
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        cert_path: write(dir, &format!("{name}.crt"), &cert.pem())?,
        key_path: write(dir, &format!("{name}.key"), &key.serialize_pem())?,
    })
}

impl Pki {
    /// Makes every certificate and key, written into `dir`.
    pub fn create(dir: &Path) -> Result<Pki, CertError> {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let (cluster_ca, ca_pem) = ca(dir, "ca", "poolwarden-cluster-ca")?;
        let apiserver = leaf(dir, &cluster_ca, "apiserver", "kube-apiserver", None, true)?;
        let admin = leaf(
            dir,
            &cluster_ca,
            "admin",
            "poolwarden-admin",
            Some("system:masters"),
            false,
        )?;
        // The RBAC bootstrap policy binds this user to system:kube-controller-manager.
        let controller_manager = leaf(dir, &cluster_ca, "kcm", "system:kube-controller-manager", None, false)?;
        let (proxy_ca, front_proxy_ca) = ca(dir, "front-proxy-ca", "poolwarden-cluster-front-proxy-ca")?;
        let front_proxy_client = leaf(dir, &proxy_ca, "front-proxy-client", "front-proxy-client", None, false)?;
        // ES256: kube-apiserver and kube-controller-manager read PKCS#8 EC keys.
        let sa = KeyPair::generate()?;
        let service_account = Pem {
            cert: sa.public_key_pem(),
            key: sa.serialize_pem(),
            cert_path: write(dir, "sa.pub", &sa.public_key_pem())?,
            key_path: write(dir, "sa.key", &sa.serialize_pem())?,
        };
        Ok(Pki {
            ca: ca_pem,
            apiserver,
            admin,
            controller_manager,
            front_proxy_ca,
            front_proxy_client,
            service_account,
        })
    }
}
