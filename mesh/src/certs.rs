//! A certificate authority issuing SPIFFE workload certificates, like istiod's CA does for each service account.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::{Error, envoy::Tls};

/// A root CA (self-signed) that signs workload certificates.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A workload certificate and its key, PEM.
pub struct Issued {
    /// Leaf certificate.
    pub cert_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

impl Ca {
    /// A new root with `common_name` as subject.
    pub fn new(common_name: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, crate::TRUST_DOMAIN);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The root certificate, PEM (what a sidecar trusts).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A workload certificate whose only identity is the URI SAN `spiffe_id`, as Istio issues them (empty
    /// subject, client and server usage).
    pub fn issue(&self, spiffe_id: &str) -> Result<Issued, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a certificate for `spiffe_id` and writes `<dir>/<name>.crt`, `<dir>/<name>.key` and the root as
    /// `<dir>/<name>-ca.crt`; returns the paths as a sidecar's [`Tls`].
    pub fn write_identity(&self, dir: &Path, name: &str, spiffe_id: &str) -> Result<Tls, Error> {
        let issued = self.issue(spiffe_id)?;
        let write = |file: String, text: &str| {
            let path = dir.join(file);
            std::fs::write(&path, text).map_err(|e| Error::Io(path.display().to_string(), e))?;
            Ok::<_, Error>(path)
        };
        Ok(Tls {
            cert_chain: write(format!("{name}.crt"), &issued.cert_pem)?,
            private_key: write(format!("{name}.key"), &issued.key_pem)?,
            trusted_ca: write(format!("{name}-ca.crt"), &self.cert_pem)?,
        })
    }
}
