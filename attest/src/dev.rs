//! The `dev` provider: an explicitly **insecure** stand-in for TEE evidence.
//!
//! It signs the report data with a P-384 key made in this process. Anyone can make such
//! evidence for any report data, so it proves nothing about the machine or the model; it exists
//! so that receipts, chains and verification can be exercised without a TEE. `cocoon verify`
//! rejects it unless `--allow-dev` is given and always says that it proves nothing.
//!
//! Layout (273 bytes): `"COCOON-DEV-EV-V1"` (16) ‖ report data (64) ‖ public key, SEC1
//! uncompressed (97) ‖ ECDSA P-384 signature `r ‖ s` (96) over SHA-384 of the first 177 bytes.

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

use crate::error::{Error, Result};
use crate::evidence::{Evidence, Platform};
use crate::provider::EvidenceProvider;

/// Magic of the dev structure.
pub const MAGIC: &[u8; 16] = b"COCOON-DEV-EV-V1";
const SIGNED_LEN: usize = 16 + 64 + 97;
/// Length of the dev structure.
pub const LEN: usize = SIGNED_LEN + 96;

/// A parsed dev structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevEvidence {
    /// The report data.
    pub report_data: [u8; 64],
    /// The signing key, SEC1 uncompressed.
    pub public_key: Vec<u8>,
}

impl DevEvidence {
    /// Parses and checks the signature (which proves only that the bytes are unchanged).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let bad = |m: &str| Error::Malformed {
            platform: "dev",
            message: m.to_owned(),
        };
        if bytes.len() != LEN {
            return Err(bad(&format!("{} bytes, {LEN} expected", bytes.len())));
        }
        if &bytes[..16] != MAGIC {
            return Err(bad("bad magic"));
        }
        let key = VerifyingKey::from_sec1_bytes(&bytes[80..SIGNED_LEN])
            .map_err(|_| bad("invalid public key"))?;
        let sig = Signature::from_slice(&bytes[SIGNED_LEN..])
            .map_err(|_| bad("invalid signature encoding"))?;
        key.verify(&bytes[..SIGNED_LEN], &sig)
            .map_err(|_| Error::BadSignature("dev evidence: signature does not verify".into()))?;
        let mut report_data = [0u8; 64];
        report_data.copy_from_slice(&bytes[16..80]);
        Ok(DevEvidence {
            report_data,
            public_key: bytes[80..SIGNED_LEN].to_vec(),
        })
    }
}

/// The insecure dev provider, with a key made when it is created.
pub struct DevProvider {
    key: SigningKey,
}

impl DevProvider {
    /// A provider with a fresh random key.
    pub fn new() -> Self {
        DevProvider {
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }
}

impl Default for DevProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl EvidenceProvider for DevProvider {
    fn platform(&self) -> Platform {
        Platform::Dev
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence> {
        let mut quote = Vec::with_capacity(LEN);
        quote.extend_from_slice(MAGIC);
        quote.extend_from_slice(report_data);
        quote.extend_from_slice(
            VerifyingKey::from(&self.key)
                .to_encoded_point(false)
                .as_bytes(),
        );
        let sig: Signature = self.key.sign(&quote);
        quote.extend_from_slice(&sig.to_bytes());
        Ok(Evidence {
            platform: Platform::Dev,
            quote,
            certs: None,
            provider: "dev".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_evidence_round_trips_and_any_changed_byte_is_refused() {
        let ev = DevProvider::new().attest(&[9; 64]).unwrap();
        assert_eq!(ev.quote.len(), LEN);
        assert_eq!(ev.report_data().unwrap(), [9; 64]);
        for i in 0..LEN {
            let mut q = ev.quote.clone();
            q[i] ^= 0x10;
            assert!(DevEvidence::parse(&q).is_err(), "byte {i}");
        }
        assert!(DevEvidence::parse(&ev.quote[..LEN - 1]).is_err());
    }
}
