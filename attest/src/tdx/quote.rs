//! TDX quotes, versions 4 and 5 (Intel TDX DCAP Quoting Library API, "Quote Format"), parsed
//! from untrusted bytes through a cursor that fails on short input.
//!
//! Layout: 48-byte header; the TD report body (v4: TD 1.0, 584 bytes; v5: a 6-byte descriptor
//! of type 2 (TD 1.0) or 3 (TD 1.5, 648 bytes) then the body); `u32` signature data length;
//! signature data: quote signature (64), attestation key (64), certification data of type 6
//! (QE report 384, QE report signature 64, QE authentication data with `u16` length, then the
//! inner certification data of type 5: the PCK certificate chain in PEM).

use crate::error::{Error, Result};

/// TDX TEE type in the header.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// ECDSA-256 with P-256 attestation key type.
pub const ATT_KEY_ECDSA_P256: u16 = 2;

/// The TD report body (TD 1.0 fields, plus TD 1.5 ones when present).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport {
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM.
    pub mrseam: [u8; 48],
    /// MRSIGNERSEAM.
    pub mrsignerseam: [u8; 48],
    /// SEAMATTRIBUTES.
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES.
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// MRTD.
    pub mrtd: [u8; 48],
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN2 (TD 1.5).
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// MRSERVICETD (TD 1.5).
    pub mrservicetd: Option<[u8; 48]>,
}

impl TdReport {
    /// Whether the TD runs in debug mode (TDATTRIBUTES bit 0).
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 1 != 0
    }
}

/// The quoting enclave's SGX report inside the signature data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QeReport {
    /// The 384 raw bytes (what the PCK key signs).
    pub raw: Vec<u8>,
    /// MISCSELECT.
    pub miscselect: u32,
    /// ATTRIBUTES.
    pub attributes: [u8; 16],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// REPORTDATA.
    pub report_data: [u8; 64],
}

/// A parsed quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxQuote {
    /// 4 or 5.
    pub version: u16,
    /// 2 (TD 1.0) or 3 (TD 1.5).
    pub body_type: u16,
    /// QE vendor id.
    pub qe_vendor_id: [u8; 16],
    /// The TD report.
    pub report: TdReport,
    /// Header and body, as signed by the attestation key.
    pub signed: Vec<u8>,
    /// Quote signature, r ‖ s.
    pub signature: [u8; 64],
    /// Attestation key, x ‖ y.
    pub attestation_key: [u8; 64],
    /// The QE report.
    pub qe_report: QeReport,
    /// QE report signature by the PCK key, r ‖ s.
    pub qe_report_signature: [u8; 64],
    /// QE authentication data.
    pub qe_auth_data: Vec<u8>,
    /// PCK certificate chain (PEM), leaf first.
    pub pck_chain_pem: Vec<u8>,
    /// Bytes after the signature data (some captured quotes carry padding).
    pub trailing: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| Error::Malformed {
                platform: "tdx",
                message: format!(
                    "truncated: {what} at byte {} needs {n} bytes, {} left",
                    self.at,
                    self.b.len().saturating_sub(self.at)
                ),
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
}

fn bad(message: String) -> Error {
    Error::Malformed {
        platform: "tdx",
        message,
    }
}

impl TdxQuote {
    /// Parses a quote; every field is bounds-checked and every type checked.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let mut c = Cursor { b, at: 0 };
        let version = c.u16("version")?;
        if !matches!(version, 4 | 5) {
            return Err(bad(format!(
                "unsupported quote version {version} (supported: 4, 5)"
            )));
        }
        let key_type = c.u16("attestation key type")?;
        if key_type != ATT_KEY_ECDSA_P256 {
            return Err(bad(format!(
                "attestation key type {key_type} is not ECDSA P-256 (2)"
            )));
        }
        let tee = c.u32("TEE type")?;
        if tee != TEE_TYPE_TDX {
            return Err(bad(format!("TEE type {tee:#x} is not TDX (0x81)")));
        }
        c.take(4, "reserved")?;
        let qe_vendor_id = c.arr("QE vendor id")?;
        c.take(20, "user data")?;
        let body_type = if version == 5 {
            let t = c.u16("body type")?;
            let size = c.u32("body size")?;
            let want = match t {
                2 => 584,
                3 => 648,
                _ => {
                    return Err(bad(format!(
                        "unsupported body type {t} (supported: 2 TD 1.0, 3 TD 1.5)"
                    )))
                }
            };
            if size != want {
                return Err(bad(format!(
                    "body type {t} of {size} bytes, {want} expected"
                )));
            }
            t
        } else {
            2
        };
        let report = TdReport {
            tee_tcb_svn: c.arr("TEE_TCB_SVN")?,
            mrseam: c.arr("MRSEAM")?,
            mrsignerseam: c.arr("MRSIGNERSEAM")?,
            seam_attributes: c.arr("SEAMATTRIBUTES")?,
            td_attributes: c.arr("TDATTRIBUTES")?,
            xfam: c.arr("XFAM")?,
            mrtd: c.arr("MRTD")?,
            mrconfigid: c.arr("MRCONFIGID")?,
            mrowner: c.arr("MROWNER")?,
            mrownerconfig: c.arr("MROWNERCONFIG")?,
            rtmr: [
                c.arr("RTMR0")?,
                c.arr("RTMR1")?,
                c.arr("RTMR2")?,
                c.arr("RTMR3")?,
            ],
            report_data: c.arr("REPORTDATA")?,
            tee_tcb_svn2: if body_type == 3 {
                Some(c.arr("TEE_TCB_SVN2")?)
            } else {
                None
            },
            mrservicetd: if body_type == 3 {
                Some(c.arr("MRSERVICETD")?)
            } else {
                None
            },
        };
        let signed = b[..c.at].to_vec();
        let sig_len = c.u32("signature data length")? as usize;
        let sig_end =
            c.at.checked_add(sig_len)
                .filter(|e| *e <= b.len())
                .ok_or_else(|| {
                    bad(format!(
                        "signature data of {sig_len} bytes runs past the quote"
                    ))
                })?;
        let mut s = Cursor {
            b: &b[..sig_end],
            at: c.at,
        };
        let signature = s.arr("quote signature")?;
        let attestation_key = s.arr("attestation key")?;
        let cert_type = s.u16("certification data type")?;
        if cert_type != 6 {
            return Err(bad(format!(
                "certification data type {cert_type} is not 6 (QE report certification data)"
            )));
        }
        let cert_size = s.u32("certification data size")? as usize;
        if s.at + cert_size != sig_end {
            return Err(bad(format!(
                "certification data of {cert_size} bytes does not end the signature data"
            )));
        }
        let raw = s.take(384, "QE report")?.to_vec();
        let qe_report_signature = s.arr("QE report signature")?;
        let auth_len = s.u16("QE authentication data length")? as usize;
        let qe_auth_data = s.take(auth_len, "QE authentication data")?.to_vec();
        let inner_type = s.u16("PCK certification data type")?;
        if inner_type != 5 {
            return Err(bad(format!(
                "PCK certification data type {inner_type} is not 5 (PCK certificate chain)"
            )));
        }
        let chain_len = s.u32("PCK chain size")? as usize;
        let pck_chain_pem = s.take(chain_len, "PCK certificate chain")?.to_vec();
        if s.at != sig_end {
            return Err(bad(format!(
                "{} unexplained bytes inside the signature data",
                sig_end - s.at
            )));
        }
        let qe = |at: usize, n: usize| &raw[at..at + n];
        let qe_report = QeReport {
            miscselect: u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]),
            attributes: qe(48, 16)
                .try_into()
                .map_err(|_| bad("QE attributes".into()))?,
            mrsigner: qe(128, 32)
                .try_into()
                .map_err(|_| bad("QE MRSIGNER".into()))?,
            isv_prod_id: u16::from_le_bytes([raw[256], raw[257]]),
            isv_svn: u16::from_le_bytes([raw[258], raw[259]]),
            report_data: qe(320, 64)
                .try_into()
                .map_err(|_| bad("QE REPORTDATA".into()))?,
            raw: raw.clone(),
        };
        Ok(TdxQuote {
            version,
            body_type,
            qe_vendor_id,
            report,
            signed,
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
            trailing: b.len() - sig_end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(path: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/vectors/tdx")
                .join(path),
        )
        .unwrap()
    }

    /// Fields as MANIFEST.tsv documents them.
    #[test]
    fn real_quotes_parse_to_their_documented_fields() {
        let cases = [
            ("gotdx-spr-v4", 4, 2, "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb", "03000400000000000000000000000000", "0000004000000000", 4, 39),
            ("dcapqvl-v4-uptodate", 4, 2, "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7", "06010300000000000000000000000000", "0000001000000000", 6, 70),
            ("dcapqvl-v5-td15", 5, 3, "273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd", "07010300000000000000000000000000", "0000001000000000", 7, 0),
        ];
        for (dir, version, body, mrtd, svn, attrs, qe_svn, trailing) in cases {
            let q = TdxQuote::parse(&vector(&format!("{dir}/quote.dat"))).unwrap();
            assert_eq!((q.version, q.body_type), (version, body), "{dir}");
            assert_eq!(hex::encode(q.report.mrtd), mrtd, "{dir}");
            assert_eq!(hex::encode(q.report.tee_tcb_svn), svn, "{dir}");
            assert_eq!(hex::encode(q.report.td_attributes), attrs, "{dir}");
            assert_eq!(q.qe_report.isv_svn, qe_svn, "{dir}");
            assert_eq!(q.trailing, trailing, "{dir}");
            assert!(
                q.pck_chain_pem.starts_with(b"-----BEGIN CERTIFICATE-----"),
                "{dir}"
            );
            assert_eq!(q.report.tee_tcb_svn2.is_some(), body == 3);
        }
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let q = vector("dcapqvl-v5-td15/quote.dat");
        for n in 0..q.len() {
            assert!(TdxQuote::parse(&q[..n]).is_err(), "length {n}");
        }
    }
}
