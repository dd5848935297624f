//! Evidence bytes from a TEE (or the dev stand-in) and the 64-byte report data they carry.

use std::fmt;

use crate::error::{Error, Result};

/// Where evidence comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// Intel TDX quote (v4 or v5).
    Tdx,
    /// AMD SEV-SNP attestation report.
    Snp,
    /// The insecure development stand-in.
    Dev,
}

impl Platform {
    /// The name used in receipts and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Tdx => "tdx",
            Platform::Snp => "snp",
            Platform::Dev => "dev",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Evidence as produced: the report or quote, and certificates when the interface gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// Which platform made it.
    pub platform: Platform,
    /// The raw quote (TDX), report (SNP) or dev structure.
    pub quote: Vec<u8>,
    /// configfs-tsm `auxblob` or the extended report's certificate table (SNP), if any.
    pub certs: Option<Vec<u8>>,
    /// The interface that produced it (`configfs-tsm`, `dev`…).
    pub provider: String,
}

/// Offset of REPORTDATA in a TDX quote: 48-byte header, then the TD report body, where
/// REPORTDATA follows TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES, XFAM,
/// MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG and RTMR0-3 (520 bytes) in v4 and v5 alike.
pub const TDX_REPORT_DATA_OFFSET: usize = 48 + 520;
/// Offset of REPORT_DATA in an SEV-SNP attestation report.
pub const SNP_REPORT_DATA_OFFSET: usize = 0x50;
/// Size of an SEV-SNP attestation report.
pub const SNP_REPORT_LEN: usize = 0x4A0;

impl Evidence {
    /// The 64 bytes of report data the evidence carries. Only locates them: it proves nothing
    /// until the evidence itself is verified.
    pub fn report_data(&self) -> Result<[u8; 64]> {
        let (offset, min_len) = match self.platform {
            Platform::Tdx => (TDX_REPORT_DATA_OFFSET, TDX_REPORT_DATA_OFFSET + 64),
            Platform::Snp => (SNP_REPORT_DATA_OFFSET, SNP_REPORT_LEN),
            Platform::Dev => {
                return crate::dev::DevEvidence::parse(&self.quote).map(|d| d.report_data)
            }
        };
        if self.quote.len() < min_len {
            return Err(Error::Malformed {
                platform: self.platform.as_str(),
                message: format!("{} bytes, at least {min_len} expected", self.quote.len()),
            });
        }
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.quote[offset..offset + 64]);
        Ok(out)
    }
}
