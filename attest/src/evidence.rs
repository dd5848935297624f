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

/// Offset of REPORTDATA in a TDX quote v4: 48-byte header, then the TD report body, where
/// REPORTDATA follows TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES, XFAM,
/// MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG and RTMR0-3 (520 bytes).
pub const TDX_REPORT_DATA_OFFSET: usize = 48 + 520;
/// In quote v5 the body follows a 6-byte descriptor (type u16, size u32).
pub const TDX_V5_REPORT_DATA_OFFSET: usize = 48 + 6 + 520;
/// Offset of REPORT_DATA in an SEV-SNP attestation report.
pub const SNP_REPORT_DATA_OFFSET: usize = 0x50;
/// Size of an SEV-SNP attestation report.
pub const SNP_REPORT_LEN: usize = 0x4A0;

impl Evidence {
    /// The 64 bytes of report data the evidence carries. Only locates them: it proves nothing
    /// until the evidence itself is verified.
    pub fn report_data(&self) -> Result<[u8; 64]> {
        let (offset, min_len) = match self.platform {
            Platform::Tdx => {
                let offset = match self.quote.get(..2) {
                    Some([4, 0]) => TDX_REPORT_DATA_OFFSET,
                    Some([5, 0]) => TDX_V5_REPORT_DATA_OFFSET,
                    _ => {
                        return Err(Error::Malformed {
                            platform: "tdx",
                            message: "not a quote of version 4 or 5".into(),
                        })
                    }
                };
                (offset, offset + 64)
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(path: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors")
            .join(path);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// REPORTDATA as MANIFEST.tsv documents it for each real vector.
    #[test]
    fn report_data_of_the_real_vectors() {
        let cases = [
            (Platform::Tdx, "tdx/gotdx-spr-v4/quote.dat", "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"),
            (Platform::Tdx, "tdx/dcapqvl-v4-uptodate/quote.dat", "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"),
            (Platform::Tdx, "tdx/dcapqvl-v5-td15/quote.dat", "d2142b643598eb5fae2bc8529dd79a558b29f868ccbb6531cb28dab9dce477280000000000000000000000000000000000000000000000000000000000000000"),
            (Platform::Snp, "snp/gosev-milan-vcek/report.bin", "01020304050000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
            (Platform::Snp, "snp/virtee-milan-vcek/report.bin", "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd"),
        ];
        for (platform, path, want) in cases {
            let e = Evidence {
                platform,
                quote: vector(path),
                certs: None,
                provider: String::new(),
            };
            assert_eq!(hex::encode(e.report_data().unwrap()), want, "{path}");
        }
    }
}
