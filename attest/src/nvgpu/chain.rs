//! NVIDIA's certificate chains: the device chain (GPU firmware leaf → … → NVIDIA Device
//! Identity CA) and the RIM signing chains (RIM signer → … → NVIDIA CoRIM signing Root CA),
//! both ECDSA P-384 / SHA-384, both ending at a pinned root; and the FWID the device leaf
//! carries.

use std::collections::HashSet;
use std::sync::Mutex;

use p384::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};
use x509_cert::der::Encode;

use crate::error::{Error, Result};
use crate::x509::{parse_certs, Cert, MAX_CERTS};

/// The NVIDIA Device Identity CA, pinned.
const DEVICE_ROOT_PEM: &str = include_str!("roots/nvidia_device_identity_ca.pem");
/// SHA-256 of its DER.
pub const DEVICE_ROOT_SHA256: &str =
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48";
/// The NVIDIA CoRIM signing Root CA, pinned.
const RIM_ROOT_PEM: &str = include_str!("roots/nvidia_corim_signing_root_ca.pem");
/// SHA-256 of its DER.
pub const RIM_ROOT_SHA256: &str =
    "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1";

/// Which pinned root a chain must end at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// NVIDIA Device Identity CA: GPU device certificates.
    Device,
    /// NVIDIA CoRIM signing Root CA: reference integrity manifests.
    Rim,
}

impl Root {
    /// The pinned certificate.
    pub fn cert(self) -> Cert {
        let (pem, sha) = match self {
            Root::Device => (DEVICE_ROOT_PEM, DEVICE_ROOT_SHA256),
            Root::Rim => (RIM_ROOT_PEM, RIM_ROOT_SHA256),
        };
        parse_certs(pem.as_bytes())
            .ok()
            .and_then(|mut c| c.pop())
            .filter(|c| hex::encode(Sha256::digest(&c.der)) == sha)
            // A compile-time constant checked by `the_pinned_roots_are_nvidias`; never reached.
            .unwrap_or_else(|| unreachable!("the embedded NVIDIA root is corrupt"))
    }

    fn name(self) -> &'static str {
        match self {
            Root::Device => "the pinned NVIDIA Device Identity CA",
            Root::Rim => "the pinned NVIDIA CoRIM signing Root CA",
        }
    }
}

/// Successful ECDSA P-384 verifications of certificates and OCSP responses, remembered so that
/// collateral and the chains GPUs share are verified once (like DCAP collateral); only the
/// inputs' hash is kept, and at most [`SigMemo::CAPACITY`] of them.
#[derive(Debug, Default)]
pub struct SigMemo(Mutex<HashSet<[u8; 32]>>);

impl Clone for SigMemo {
    fn clone(&self) -> Self {
        SigMemo(Mutex::new(
            self.0.lock().map(|s| s.clone()).unwrap_or_default(),
        ))
    }
}

impl SigMemo {
    /// Most verifications remembered; the memo starts over when full.
    pub const CAPACITY: usize = 4096;

    /// Whether `signer`'s P-384 key signed `message` with `signature` (DER).
    pub fn verify(&self, signer: &Cert, message: &[u8], signature: &[u8]) -> Result<()> {
        let key = signer
            .cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        let mut h = Sha256::new();
        for part in [key, signature, message] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let id: [u8; 32] = h.finalize().into();
        if self.0.lock().is_ok_and(|m| m.contains(&id)) {
            return Ok(());
        }
        let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| {
            Error::BadSignature("a signature is not a DER ECDSA P-384 signature".into())
        })?;
        crate::x509::p384_key(signer)?
            .verify(message, &sig)
            .map_err(|_| {
                Error::BadSignature(format!("not signed by {:?}", signer.common_name()))
            })?;
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= Self::CAPACITY {
                m.clear();
            }
            m.insert(id);
        }
        Ok(())
    }

    /// Whether `issuer` signed certificate `c` with ECDSA P-384 / SHA-384.
    pub fn cert_signed_by(&self, c: &Cert, issuer: &Cert) -> Result<()> {
        const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
        if c.cert.signature_algorithm.oid.to_string() != ECDSA_SHA384 {
            return Err(Error::BadSignature(format!(
                "{}: signature algorithm {} is not ECDSA with SHA-384",
                c.common_name(),
                c.cert.signature_algorithm.oid
            )));
        }
        let tbs = c
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| Error::Malformed {
                platform: "x509",
                message: format!("re-encoding: {e}"),
            })?;
        self.verify(issuer, &tbs, c.cert.signature.raw_bytes())
            .map_err(|_| {
                Error::BadSignature(format!(
                    "{} is not signed by {}",
                    c.common_name(),
                    issuer.common_name()
                ))
            })
    }
}

/// Checks a chain given leaf first: each certificate signed by the next (ECDSA P-384), each
/// issuer named as the next's subject and marked a CA, every one valid at `at`, the last
/// byte-identical to the pinned `root`. `what` names the chain in errors.
pub fn verify_chain(what: &str, certs: &[Cert], root: Root, at: u64, memo: &SigMemo) -> Result<()> {
    if certs.is_empty() || certs.len() > MAX_CERTS {
        return Err(Error::BadSignature(format!(
            "{what}: {} certificates, 1 to {MAX_CERTS} expected",
            certs.len()
        )));
    }
    let pinned = root.cert();
    let last = &certs[certs.len() - 1];
    if last.der != pinned.der {
        return Err(Error::BadSignature(format!(
            "{what}: chain ends at {:?} (SHA-256 {}), not {}",
            last.common_name(),
            hex::encode(Sha256::digest(&last.der)),
            root.name()
        )));
    }
    for (i, c) in certs.iter().enumerate() {
        c.check_validity(at)
            .map_err(|e| Error::BadSignature(format!("{what}: {e}")))?;
        let issuer = certs.get(i + 1).unwrap_or(&pinned);
        if c.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(Error::BadSignature(format!(
                "{what}: {:?} names issuer {:?}, but the next certificate is {:?}",
                c.common_name(),
                c.issuer_common_name(),
                issuer.common_name()
            )));
        }
        if i + 1 < certs.len() && !issuer.is_ca() {
            return Err(Error::BadSignature(format!(
                "{what}: {:?} issues a certificate but is not marked a CA",
                issuer.common_name()
            )));
        }
        memo.cert_signed_by(c, issuer)
            .map_err(|e| Error::BadSignature(format!("{what}: {e}")))?;
    }
    Ok(())
}

/// The extension in which NVIDIA's device leaf carries its FWID (TCG DICE arc).
pub const FWID_EXTENSION: &str = "2.23.133.5.4.1";
/// id-sha384.
const SHA384_OID: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];

/// One DER element: tag, content, and what follows it.
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The SHA-384 FWID in the device leaf's extension [`FWID_EXTENSION`], whose value on Hopper
/// is `SEQUENCE { INTEGER, SubjectPublicKeyInfo, SEQUENCE { id-sha384, OCTET STRING } … }`.
pub fn leaf_fwid(leaf: &Cert) -> Result<Vec<u8>> {
    let bad = |why: &str| {
        Error::BadSignature(format!(
            "device leaf {:?}: FWID extension {FWID_EXTENSION}: {why}",
            leaf.common_name()
        ))
    };
    let value = leaf
        .extension(FWID_EXTENSION)
        .ok_or_else(|| bad("absent"))?;
    let (tag, mut items, rest) = tlv(value).ok_or_else(|| bad("not DER"))?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad("not one SEQUENCE"));
    }
    let mut found = None;
    while !items.is_empty() {
        let (tag, content, rest) = tlv(items).ok_or_else(|| bad("not DER"))?;
        items = rest;
        if tag != 0x30 {
            continue;
        }
        let Some((0x06, oid, after)) = tlv(content) else {
            continue;
        };
        if oid != SHA384_OID {
            continue;
        }
        match tlv(after) {
            Some((0x04, digest, [])) if digest.len() == 48 => {
                if found.replace(digest.to_vec()).is_some() {
                    return Err(bad("two SHA-384 FWIDs"));
                }
            }
            _ => return Err(bad("SHA-384 FWID without a 48-byte digest")),
        }
    }
    found.ok_or_else(|| bad("no SHA-384 FWID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_roots_are_nvidias() {
        // The files the vectors' PROVENANCE names as NVIDIA's pinned roots.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/nvgpu");
        for (root, file) in [
            (Root::Device, "go-nvattest-tools-h100/device_root.pem"),
            (Root::Rim, "go-nvattest-tools-h100/rim_root.pem"),
            (
                Root::Device,
                "nvtrust-hopper-sample/verifier_device_root.pem",
            ),
            (Root::Rim, "nvtrust-hopper-sample/verifier_RIM_root.pem"),
        ] {
            let c = parse_certs(&std::fs::read(dir.join(file)).unwrap()).unwrap();
            assert_eq!(c[0].der, root.cert().der, "{file}");
        }
    }

    #[test]
    fn the_real_device_chain_and_fwid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/nvgpu/go-nvattest-tools-h100");
        let certs = parse_certs(
            &std::fs::read(dir.join("test_gpu_attestation_certificate_chain.dat")).unwrap(),
        )
        .unwrap();
        assert_eq!(certs.len(), 5);
        verify_chain(
            "device",
            &certs,
            Root::Device,
            1_760_000_000,
            &SigMemo::default(),
        )
        .unwrap();
        let e = verify_chain(
            "device",
            &certs,
            Root::Rim,
            1_760_000_000,
            &SigMemo::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not the pinned NVIDIA CoRIM"), "{e}");
        let e = verify_chain(
            "device",
            &certs[..4],
            Root::Device,
            1_760_000_000,
            &SigMemo::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("chain ends at"), "{e}");
        let mut swapped = certs.clone();
        swapped.swap(1, 2);
        assert!(verify_chain(
            "device",
            &swapped,
            Root::Device,
            1_760_000_000,
            &SigMemo::default()
        )
        .is_err());
        assert_eq!(
            hex::encode(leaf_fwid(&certs[0]).unwrap()),
            "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d"
        );
        assert!(leaf_fwid(&certs[1]).is_err());
    }
}
