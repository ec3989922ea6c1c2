//! What the listeners' TLS and the HTTPS upstream client share: the one crypto provider (ring),
//! reading PEM files with errors that name the file and what is wrong (never its contents), and
//! the stamp that tells a changed file from an unchanged one.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{}: {reason}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, in words (never its contents).
        reason: String,
    },
    /// The files read, but do not make a TLS configuration (a key that does not match its
    /// certificate, an unsupported key type).
    #[error("{0}")]
    Config(String),
}

/// The crypto provider every TLS configuration of the gateway uses: ring, chosen explicitly so
/// that another crate enabling a second provider in rustls cannot make the choice ambiguous.
/// rustls 0.23.48 deprecates ring's provider because it has no post-quantum key exchange
/// (X25519MLKEM768 needs aws-lc-rs, whose build needs cmake and takes far longer); the key
/// exchange is X25519 or the NIST curves, as with most peers today.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    #[allow(deprecated)]
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::File {
        path: path.to_owned(),
        reason: format!("cannot read: {e}"),
    })
}

/// Says what is wrong with a PEM file without quoting it (`pem::Error`'s own text quotes the
/// offending line, which may be part of a key).
fn pem_reason(e: &pem::Error, wanted: &str) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM block holds malformed base64".into(),
        pem::Error::SectionTooLarge => "a PEM block is too large".into(),
        pem::Error::NoItemsFound => format!("no {wanted} found"),
        pem::Error::Io(e) => format!("cannot read: {e}"),
        _ => "not a usable PEM file".into(),
    }
}

/// The certificates of a PEM file, in order (a chain: leaf first; or a CA bundle).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let file_error = |reason: String| Error::File {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(pem_reason(&e, "CERTIFICATE block")))?;
    if certs.is_empty() {
        return Err(file_error(pem_reason(
            &pem::Error::NoItemsFound,
            "CERTIFICATE block",
        )));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1, unencrypted).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::File {
        path: path.to_owned(),
        reason: pem_reason(
            &e,
            "unencrypted private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
        ),
    })
}

/// What a file looked like when last read: modification time, size and inode, so that an edit
/// in place and a new file renamed over the old one are both seen. `None` for a file that
/// cannot be examined (its reading then says why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(Vec<Option<(std::time::SystemTime, u64, u64)>>);

impl Stamp {
    /// The stamp of these files, now.
    pub fn of<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Stamp {
        Stamp(
            paths
                .into_iter()
                .map(|p| {
                    let m = std::fs::metadata(p).ok()?;
                    #[cfg(unix)]
                    let ino = std::os::unix::fs::MetadataExt::ino(&m);
                    #[cfg(not(unix))]
                    let ino = 0;
                    Some((m.modified().ok()?, m.len(), ino))
                })
                .collect(),
        )
    }
}

/// Words for a rustls error, for logs and answers (rustls's own text names no secret).
pub fn config_error(e: rustls::Error) -> Error {
    Error::Config(match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not match the certificate".into()
        }
        e => e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_pem_names_the_file_and_never_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read_certs(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        assert!(e.contains("cannot read"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello SECRET-MATERIAL\n").unwrap();
        let e = read_certs(&garbage).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE block found"), "{e}");
        assert!(!e.contains("SECRET-MATERIAL"), "{e}");

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN PRIVATE KEY-----\nSECRETSECRET!!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = read_key(&broken).unwrap_err().to_string();
        assert!(e.contains("malformed base64"), "{e}");
        assert!(!e.contains("SECRETSECRET"), "{e}");

        let unterminated = dir.path().join("unterminated.pem");
        std::fs::write(&unterminated, "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n").unwrap();
        let e = read_key(&unterminated).unwrap_err().to_string();
        assert!(e.contains("no END line"), "{e}");
        assert!(!e.contains("SECRETSECRET"), "{e}");
    }

    #[test]
    fn a_stamp_changes_when_the_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.pem");
        std::fs::write(&f, "one").unwrap();
        let before = Stamp::of([f.as_path()]);
        assert_eq!(before, Stamp::of([f.as_path()]));
        let tmp = dir.path().join(".a.pem.tmp");
        std::fs::write(&tmp, "two!").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_ne!(before, Stamp::of([f.as_path()]));
    }
}
