//! The GPU attestation report: an SPDM 1.1 GET_MEASUREMENTS request followed by the device's
//! MEASUREMENTS response (DMTF DSP0274 §10.11), with NVIDIA's opaque data fields.
//!
//! Every length is checked before it is used; the response must end exactly with a 96-byte
//! ECDSA P-384 signature (raw r‖s) over SHA-384 of the request and the response less the
//! signature.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// SPDM version 1.1, the one Hopper speaks.
pub const SPDM_1_1: u8 = 0x11;
/// Request code of GET_MEASUREMENTS.
pub const GET_MEASUREMENTS: u8 = 0xE0;
/// Response code of MEASUREMENTS.
pub const MEASUREMENTS: u8 = 0x60;
/// Length of the GET_MEASUREMENTS request with a signature asked for: header (4), nonce (32),
/// slot (1).
pub const REQUEST_LEN: usize = 37;
/// Length of an ECDSA P-384 signature, raw r‖s.
pub const SIGNATURE_LEN: usize = 96;
/// Largest report accepted (NVML's buffer is 8 KiB).
pub const MAX_REPORT_LEN: usize = 0x2000;

/// NVIDIA opaque data field types (the TLVs after the responder nonce).
pub mod field {
    /// Driver version, NUL-terminated ASCII (`550.90.07`).
    pub const DRIVER_VERSION: u16 = 3;
    /// VBIOS version, 8 bytes.
    pub const VBIOS_VERSION: u16 = 6;
    /// Chip SKU, NUL-padded ASCII (`882`).
    pub const CHIP_SKU: u16 = 15;
    /// Project, NUL-padded ASCII (`1010`).
    pub const PROJECT: u16 = 17;
    /// Project SKU, NUL-padded ASCII (`0200`).
    pub const PROJECT_SKU: u16 = 18;
    /// FWID of the firmware that signed the report: SHA-384.
    pub const FWID: u16 = 20;
}

/// One measurement block of the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// Index, from 1.
    pub index: u8,
    /// DMTF measurement value type.
    pub value_type: u8,
    /// The measurement (a SHA-384 digest on Hopper).
    pub value: Vec<u8>,
}

/// A parsed GPU attestation report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuReport {
    /// The requester's nonce (bytes 4..36 of the request).
    pub nonce: [u8; 32],
    /// The certificate slot asked for.
    pub slot: u8,
    /// The measurement blocks, by increasing index.
    pub measurements: Vec<Measurement>,
    /// The responder's nonce.
    pub responder_nonce: [u8; 32],
    /// NVIDIA's opaque data fields by type.
    pub opaque: BTreeMap<u16, Vec<u8>>,
    /// Driver version (`550.90.07`).
    pub driver_version: String,
    /// VBIOS version as NVIDIA writes it (`96.00.9F.00.01`).
    pub vbios_version: String,
    /// FWID of the signing firmware.
    pub fwid: Vec<u8>,
    /// Request and response less the signature: what is signed.
    pub signed: Vec<u8>,
    /// The signature, raw r‖s.
    pub signature: [u8; SIGNATURE_LEN],
}

fn bad(message: String) -> Error {
    Error::Malformed {
        platform: "nvgpu",
        message,
    }
}

/// A cursor that refuses to read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            bad(format!(
                "{}: {field} ({n} bytes at offset {}) runs past the end ({} bytes)",
                self.what,
                self.at,
                self.bytes.len()
            ))
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &str) -> Result<u16> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u24(&mut self, field: &str) -> Result<usize> {
        let b = self.take(3, field)?;
        Ok(usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16)
    }
    fn rest(&self) -> usize {
        self.bytes.len() - self.at
    }
}

/// NUL-terminated or NUL-padded ASCII.
fn ascii(field: &str, v: &[u8]) -> Result<String> {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    if v[end..].iter().any(|b| *b != 0) || !v[..end].iter().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!(
            "opaque field {field} is not NUL-padded printable ASCII"
        )));
    }
    Ok(String::from_utf8_lossy(&v[..end]).into_owned())
}

/// The VBIOS version as NVIDIA writes it: bytes 3, 2, 1, 0 and 4, in upper-case hex, dotted.
fn vbios_version(v: &[u8]) -> Result<String> {
    if v.len() != 8 || v[5..].iter().any(|b| *b != 0) {
        return Err(bad(format!(
            "opaque VBIOS version: {} bytes ({}), 8 with the last three zero expected",
            v.len(),
            hex::encode(v)
        )));
    }
    Ok(format!(
        "{:02X}.{:02X}.{:02X}.{:02X}.{:02X}",
        v[3], v[2], v[1], v[0], v[4]
    ))
}

impl GpuReport {
    /// Parses request ‖ response.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_REPORT_LEN {
            return Err(bad(format!(
                "report of {} bytes, more than the {MAX_REPORT_LEN} NVML returns",
                bytes.len()
            )));
        }
        let mut req = Reader {
            bytes,
            at: 0,
            what: "GET_MEASUREMENTS request",
        };
        let (version, code, attributes, operation) = (
            req.u8("version")?,
            req.u8("code")?,
            req.u8("param1")?,
            req.u8("param2")?,
        );
        if version != SPDM_1_1 {
            return Err(bad(format!(
                "request SPDM version {version:#04x}: only 1.1 (0x11) is supported"
            )));
        }
        if code != GET_MEASUREMENTS {
            return Err(bad(format!(
                "request code {code:#04x} is not GET_MEASUREMENTS (0xe0)"
            )));
        }
        if attributes != 0x01 {
            return Err(bad(format!(
                "request attributes {attributes:#04x}: a signed response (0x01) is required"
            )));
        }
        if operation != 0xFF {
            return Err(bad(format!(
                "request operation {operation:#04x}: all measurements (0xff) are required"
            )));
        }
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(req.take(32, "nonce")?);
        let slot = req.u8("slot")?;
        if slot > 7 {
            return Err(bad(format!("request slot {slot} is not 0..7")));
        }
        let mut resp = Reader {
            bytes,
            at: REQUEST_LEN,
            what: "MEASUREMENTS response",
        };
        let (version, code) = (resp.u8("version")?, resp.u8("code")?);
        if version != SPDM_1_1 || code != MEASUREMENTS {
            return Err(bad(format!(
                "response version {version:#04x} code {code:#04x}: SPDM 1.1 MEASUREMENTS (0x11 0x60) expected"
            )));
        }
        resp.take(2, "param1, param2")?;
        let count = resp.u8("number of blocks")?;
        let record_len = resp.u24("measurement record length")?;
        let record = resp.take(record_len, "measurement record")?;
        let measurements = parse_record(record, count)?;
        let mut responder_nonce = [0u8; 32];
        responder_nonce.copy_from_slice(resp.take(32, "responder nonce")?);
        let opaque_len = resp.u16("opaque data length")?;
        let opaque = parse_opaque(resp.take(usize::from(opaque_len), "opaque data")?)?;
        if resp.rest() != SIGNATURE_LEN {
            return Err(bad(format!(
                "{} bytes after the opaque data, the {SIGNATURE_LEN}-byte signature expected",
                resp.rest()
            )));
        }
        let signed_len = resp.at;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(resp.take(SIGNATURE_LEN, "signature")?);
        let need = |t: u16, name: &str| {
            opaque
                .get(&t)
                .ok_or_else(|| bad(format!("opaque data lacks the {name} field ({t})")))
        };
        let driver_version = ascii(
            "driver version",
            need(field::DRIVER_VERSION, "driver version")?,
        )?;
        let vbios_version = vbios_version(need(field::VBIOS_VERSION, "VBIOS version")?)?;
        let fwid = need(field::FWID, "FWID")?.clone();
        if fwid.len() != 48 {
            return Err(bad(format!(
                "opaque FWID of {} bytes, 48 expected",
                fwid.len()
            )));
        }
        Ok(GpuReport {
            nonce,
            slot,
            measurements,
            responder_nonce,
            driver_version,
            vbios_version,
            fwid,
            opaque,
            signed: bytes[..signed_len].to_vec(),
            signature,
        })
    }

    /// An ASCII opaque field (project, SKU), if present and well formed.
    pub fn ascii_field(&self, t: u16) -> Option<String> {
        self.opaque.get(&t).and_then(|v| ascii("", v).ok())
    }

    /// The measurement with this index, if reported.
    pub fn measurement(&self, index: u8) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.index == index)
    }
}

/// The measurement record: `count` blocks of index, specification (DMTF), size, then the DMTF
/// value type, value size and value; the blocks fill the record exactly, indices increase.
fn parse_record(record: &[u8], count: u8) -> Result<Vec<Measurement>> {
    let mut r = Reader {
        bytes: record,
        at: 0,
        what: "measurement record",
    };
    let mut out: Vec<Measurement> = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let index = r.u8("block index")?;
        let spec = r.u8("measurement specification")?;
        let size = usize::from(r.u16("measurement size")?);
        if spec != 0x01 {
            return Err(bad(format!(
                "measurement {index}: specification {spec:#04x} is not DMTF (0x01)"
            )));
        }
        if out.last().is_some_and(|m| m.index >= index) || index == 0 {
            return Err(bad(format!(
                "measurement index {index} is zero, repeated or out of order"
            )));
        }
        let mut block = Reader {
            bytes: r.take(size, "measurement")?,
            at: 0,
            what: "DMTF measurement",
        };
        let value_type = block.u8("value type")?;
        let value_len = usize::from(block.u16("value size")?);
        let value = block.take(value_len, "value")?.to_vec();
        if block.rest() != 0 {
            return Err(bad(format!(
                "measurement {index}: size {size} is not 3 + value size {value_len}"
            )));
        }
        out.push(Measurement {
            index,
            value_type,
            value,
        });
    }
    if r.rest() != 0 {
        return Err(bad(format!(
            "measurement record: {} bytes left after {count} blocks",
            r.rest()
        )));
    }
    Ok(out)
}

/// NVIDIA's opaque data: type (u16), size (u16), value, filling the data exactly; a type
/// appears once.
fn parse_opaque(data: &[u8]) -> Result<BTreeMap<u16, Vec<u8>>> {
    let mut r = Reader {
        bytes: data,
        at: 0,
        what: "opaque data",
    };
    let mut out = BTreeMap::new();
    while r.rest() > 0 {
        let t = r.u16("field type")?;
        let n = usize::from(r.u16("field size")?);
        let v = r.take(n, "field value")?;
        if out.insert(t, v.to_vec()).is_some() {
            return Err(bad(format!("opaque field {t} appears twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn report() -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../tests/vectors/nvgpu/go-nvattest-tools-h100/test_raw_gpu_attestation_report.dat",
        ))
        .unwrap()
    }

    #[test]
    fn the_real_report_parses() {
        let r = GpuReport::parse(&report()).unwrap();
        assert_eq!(
            hex::encode(r.nonce),
            "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
        );
        assert_eq!(
            hex::encode(r.responder_nonce),
            "b4b8a06aaaa35542839388e159d447a5d6f6194998fd86513e2d591ccf640985"
        );
        assert_eq!(r.measurements.len(), 64);
        assert!(r.measurements.iter().all(|m| m.value.len() == 48));
        assert_eq!(r.driver_version, "550.90.07");
        assert_eq!(r.vbios_version, "96.00.9F.00.01");
        assert_eq!(r.ascii_field(field::PROJECT).as_deref(), Some("1010"));
        assert_eq!(r.ascii_field(field::PROJECT_SKU).as_deref(), Some("0200"));
        assert_eq!(r.ascii_field(field::CHIP_SKU).as_deref(), Some("882"));
        assert_eq!(r.signed.len() + SIGNATURE_LEN, report().len());
    }

    #[test]
    fn every_truncation_and_length_change_is_an_error_not_a_panic() {
        let bytes = report();
        for n in 0..bytes.len() {
            assert!(GpuReport::parse(&bytes[..n]).is_err(), "{n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(GpuReport::parse(&longer).is_err());
        // Each length field (blocks, record length, opaque length) set to a wrong value.
        for (at, v) in [(37 + 4, 63u8), (37 + 5, 0xff), (37 + 7, 1)] {
            let mut b = bytes.clone();
            b[at] = v;
            assert!(GpuReport::parse(&b).is_err(), "{at}");
        }
    }
}
