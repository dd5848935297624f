//! The SEV-SNP attestation report (SEV-SNP ABI specification, `ATTESTATION_REPORT`), versions 2,
//! 3 and 5, parsed from untrusted bytes.

use crate::error::{Error, Result};
use crate::evidence::SNP_REPORT_LEN;

/// A TCB version as the report and the VCEK carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcbVersion {
    /// Firmware (Turin and later; 0 before).
    pub fmc: u8,
    /// Boot loader SVN.
    pub bootloader: u8,
    /// PSP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes the 8 bytes of a `TCB_VERSION`; Turin moved the fields (FMC first).
    pub fn decode(b: [u8; 8], turin: bool) -> Self {
        if turin {
            TcbVersion {
                fmc: b[0],
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }
        } else {
            TcbVersion {
                fmc: 0,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }
        }
    }
}

/// Which key signed the report (`SIGNING_KEY`, bits 4:2 of the key information word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// Versioned chip endorsement key.
    Vcek,
    /// Versioned loaded endorsement key.
    Vlek,
}

/// A parsed report; `signed` is the signed part (bytes 0x000..0x2A0).
#[derive(Clone, Debug)]
pub struct SnpReport {
    /// Format version (2, 3 or 5).
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: u64,
    /// Family id.
    pub family_id: [u8; 16],
    /// Image id.
    pub image_id: [u8; 16],
    /// VMPL of the request.
    pub vmpl: u32,
    /// Signature algorithm (1: ECDSA P-384 with SHA-384).
    pub signature_algo: u32,
    /// Platform information bits.
    pub platform_info: u64,
    /// Signing key.
    pub signing_key: SigningKey,
    /// Whether the chip id is masked.
    pub mask_chip_id: bool,
    /// Report data.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host data.
    pub host_data: [u8; 32],
    /// ID key digest.
    pub id_key_digest: [u8; 48],
    /// Author key digest.
    pub author_key_digest: [u8; 48],
    /// Report id.
    pub report_id: [u8; 32],
    /// Raw `REPORTED_TCB` (decoded once the product is known).
    pub reported_tcb: [u8; 8],
    /// Raw `CURRENT_TCB`.
    pub current_tcb: [u8; 8],
    /// Raw `COMMITTED_TCB`.
    pub committed_tcb: [u8; 8],
    /// Raw `LAUNCH_TCB`.
    pub launch_tcb: [u8; 8],
    /// CPUID family, model, stepping (version 3 and later; zero before).
    pub cpuid: [u8; 3],
    /// Chip id.
    pub chip_id: [u8; 64],
    /// Signature `r` and `s`, big-endian 48 bytes each.
    pub signature: [u8; 96],
    /// The signed bytes.
    pub signed: Vec<u8>,
}

/// Guest policy bit: debugging allowed.
pub const POLICY_DEBUG: u64 = 1 << 19;
/// Guest policy bit: a migration agent may be associated.
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;
/// Guest policy bit: SMT allowed.
pub const POLICY_SMT: u64 = 1 << 16;

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

impl SnpReport {
    /// Parses a report, checking its length, version and signature algorithm.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Malformed {
            platform: "snp",
            message: m,
        };
        if b.len() != SNP_REPORT_LEN {
            return Err(bad(format!("{} bytes, {SNP_REPORT_LEN} expected", b.len())));
        }
        let u32_at = |at: usize| u32::from_le_bytes(arr(b, at));
        let u64_at = |at: usize| u64::from_le_bytes(arr(b, at));
        let version = u32_at(0x00);
        if !matches!(version, 2 | 3 | 5) {
            return Err(bad(format!(
                "unsupported report version {version} (supported: 2, 3, 5)"
            )));
        }
        let signature_algo = u32_at(0x34);
        if signature_algo != 1 {
            return Err(bad(format!("unsupported signature algorithm {signature_algo} (supported: 1, ECDSA P-384 SHA-384)")));
        }
        let key_info = u32_at(0x48);
        let signing_key = match (key_info >> 2) & 7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            k => {
                return Err(bad(format!(
                    "signing key {k} is neither VCEK (0) nor VLEK (1)"
                )))
            }
        };
        // r and s are 72-byte little-endian fields; P-384 uses the low 48 bytes.
        let (r, s) = (&b[0x2A0..0x2A0 + 72], &b[0x2E8..0x2E8 + 72]);
        if r[48..].iter().chain(&s[48..]).any(|x| *x != 0) {
            return Err(bad("signature components exceed 384 bits".into()));
        }
        let mut signature = [0u8; 96];
        for i in 0..48 {
            signature[i] = r[47 - i];
            signature[48 + i] = s[47 - i];
        }
        let cpuid = if version >= 3 { arr(b, 0x188) } else { [0; 3] };
        Ok(SnpReport {
            version,
            guest_svn: u32_at(0x04),
            policy: u64_at(0x08),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(0x30),
            signature_algo,
            current_tcb: arr(b, 0x38),
            platform_info: u64_at(0x40),
            signing_key,
            mask_chip_id: key_info & 2 != 0,
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            reported_tcb: arr(b, 0x180),
            cpuid,
            chip_id: arr(b, 0x1A0),
            committed_tcb: arr(b, 0x1E0),
            launch_tcb: arr(b, 0x1F0),
            signature,
            signed: b[..0x2A0].to_vec(),
        })
    }

    /// Whether the guest policy allows debugging.
    pub fn debug_allowed(&self) -> bool {
        self.policy & POLICY_DEBUG != 0
    }
}
