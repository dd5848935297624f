//! `/dev/sev-guest`: the SEV-SNP guest driver's `SNP_GET_EXT_REPORT` ioctl, used when
//! configfs-tsm is absent. The structures mirror `include/uapi/linux/sev-guest.h`; the
//! response is the firmware's `MSG_REPORT_RSP` (status, report size, 24 reserved bytes, then
//! the 1184-byte attestation report). Certificates come back as the GUID table that configfs-tsm
//! calls `auxblob`. Only the `ioctl` call itself is unsafe.
#![allow(unsafe_code)] // docs/design.md §10: the attest crate's ioctl calls, each with a SAFETY comment

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::evidence::{Evidence, Platform, SNP_REPORT_LEN};
use crate::provider::EvidenceProvider;

/// The guest device.
pub const DEVICE: &str = "/dev/sev-guest";

/// `struct snp_report_req`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReportReq {
    /// Report data.
    pub user_data: [u8; 64],
    /// VMPL the report is for.
    pub vmpl: u32,
    /// Reserved, zero.
    pub rsvd: [u8; 28],
}

/// `struct snp_ext_report_req`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExtReportReq {
    /// The report request.
    pub data: ReportReq,
    /// Address of the certificate buffer.
    pub certs_address: u64,
    /// Its length in bytes; on `INVALID_LEN` the driver writes the length it needs.
    pub certs_len: u32,
}

/// `struct snp_report_resp`.
#[repr(C)]
pub struct ReportResp {
    /// `MSG_REPORT_RSP`.
    pub data: [u8; 4000],
}

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
pub struct GuestRequest {
    /// Message version, 1.
    pub msg_version: u8,
    /// Address of the request.
    pub req_data: u64,
    /// Address of the response.
    pub resp_data: u64,
    /// Firmware error (low 32 bits) and VMM error (high 32 bits).
    pub exitinfo2: u64,
}

/// `_IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
pub const SNP_GET_EXT_REPORT: u64 =
    (3 << 30) | ((std::mem::size_of::<GuestRequest>() as u64) << 16) | ((b'S' as u64) << 8) | 0x2;
/// VMM error: the certificate buffer is too small.
const VMM_ERR_INVALID_LEN: u32 = 1;

/// The report inside a `MSG_REPORT_RSP`.
pub fn parse_response(resp: &[u8]) -> Result<Vec<u8>> {
    let bad = |m: String| Error::Malformed {
        platform: "snp",
        message: m,
    };
    if resp.len() < 32 + SNP_REPORT_LEN {
        return Err(bad(format!("response of {} bytes", resp.len())));
    }
    let status = u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]);
    let size = u32::from_le_bytes([resp[4], resp[5], resp[6], resp[7]]) as usize;
    if status != 0 {
        return Err(bad(format!("firmware status {status:#x}")));
    }
    if size != SNP_REPORT_LEN {
        return Err(bad(format!(
            "report size {size}, {SNP_REPORT_LEN} expected"
        )));
    }
    Ok(resp[32..32 + SNP_REPORT_LEN].to_vec())
}

/// The largest certificate table accepted from the host (a VCEK chain is about 5 KiB).
const MAX_CERTS_LEN: u64 = 1 << 20;

/// Evidence through `/dev/sev-guest`.
pub struct SevGuest {
    device: File,
}

impl SevGuest {
    /// Opens the device.
    pub fn open(path: &Path) -> Result<Self> {
        let device = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                error: source,
            })?;
        Ok(SevGuest { device })
    }

    fn ext_report(&self, report_data: &[u8; 64], certs: &mut Vec<u8>) -> Result<(Vec<u8>, u64)> {
        let mut req = ExtReportReq {
            data: ReportReq {
                user_data: *report_data,
                vmpl: 0,
                rsvd: [0; 28],
            },
            certs_address: certs.as_mut_ptr() as u64,
            certs_len: certs.len() as u32,
        };
        let mut resp = ReportResp { data: [0; 4000] };
        let mut guest = GuestRequest {
            msg_version: 1,
            req_data: &mut req as *mut ExtReportReq as u64,
            resp_data: &mut resp as *mut ReportResp as u64,
            exitinfo2: 0,
        };
        // SAFETY: `guest` points at `req` and `resp`, and `req` at `certs`, all live and of the
        // sizes the driver expects (layouts checked in the tests); the driver writes only within
        // them and returns before they are dropped.
        let rc = unsafe {
            libc::ioctl(
                self.device.as_raw_fd(),
                SNP_GET_EXT_REPORT as _,
                &mut guest as *mut GuestRequest,
            )
        };
        if rc != 0 {
            if (guest.exitinfo2 >> 32) as u32 == VMM_ERR_INVALID_LEN {
                return Ok((Vec::new(), u64::from(req.certs_len)));
            }
            return Err(Error::Io {
                path: DEVICE.into(),
                error: std::io::Error::last_os_error(),
            });
        }
        certs.truncate(req.certs_len.min(certs.len() as u32) as usize);
        Ok((parse_response(&resp.data)?, 0))
    }
}

impl EvidenceProvider for SevGuest {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence> {
        let mut certs = vec![0u8; 4 * 4096];
        let (mut report, needed) = self.ext_report(report_data, &mut certs)?;
        if report.is_empty() {
            // The length comes from the host: bounded, so a lying host cannot exhaust memory.
            if needed > MAX_CERTS_LEN {
                return Err(Error::Malformed {
                    platform: "snp",
                    message: format!(
                        "the host asks for a {needed}-byte certificate buffer (at most {MAX_CERTS_LEN})"
                    ),
                });
            }
            certs = vec![0u8; needed as usize];
            report = self.ext_report(report_data, &mut certs)?.0;
            if report.is_empty() {
                return Err(Error::Malformed {
                    platform: "snp",
                    message: "the host refused the certificate buffer twice".into(),
                });
            }
        }
        let certs = (!certs.iter().all(|b| *b == 0)).then_some(certs);
        Ok(Evidence {
            platform: Platform::Snp,
            quote: report,
            certs,
            provider: "sev-guest".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_linux_uapi() {
        assert_eq!(size_of::<ReportReq>(), 96);
        assert_eq!(offset_of!(ExtReportReq, certs_address), 96);
        assert_eq!(offset_of!(ExtReportReq, certs_len), 104);
        assert_eq!(size_of::<ReportResp>(), 4000);
        assert_eq!(size_of::<GuestRequest>(), 32);
        assert_eq!(offset_of!(GuestRequest, req_data), 8);
        assert_eq!(offset_of!(GuestRequest, exitinfo2), 24);
        assert_eq!(SNP_GET_EXT_REPORT, 0xC020_5302);
    }

    #[test]
    fn responses_are_checked() {
        let report: Vec<u8> = (0..SNP_REPORT_LEN).map(|i| i as u8).collect();
        let mut resp = vec![0u8; 4000];
        resp[4..8].copy_from_slice(&(SNP_REPORT_LEN as u32).to_le_bytes());
        resp[32..32 + SNP_REPORT_LEN].copy_from_slice(&report);
        assert_eq!(parse_response(&resp).unwrap(), report);
        let mut failed = resp.clone();
        failed[0] = 0x16;
        assert!(parse_response(&failed)
            .unwrap_err()
            .to_string()
            .contains("status 0x16"));
        let mut short = resp.clone();
        short[4..8].copy_from_slice(&100u32.to_le_bytes());
        assert!(parse_response(&short).is_err());
        assert!(parse_response(&resp[..100]).is_err());
    }
}
