//! The PCK certificate: Intel's SGX extensions (OID 1.2.840.113741.1.13.1) with the platform's
//! FMSPC, PCE id and TCB (16 SGX component SVNs, PCESVN), read with a small DER walker.

use crate::error::{Error, Result};
use crate::x509::Cert;

/// Content bytes of OID 1.2.840.113741.1.13.1 (SGX extensions).
const SGX_EXT: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x01, 0x0D, 0x01];

/// What the PCK certificate says about the platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PckTcb {
    /// FMSPC (6 bytes).
    pub fmspc: [u8; 6],
    /// PCE id (2 bytes).
    pub pce_id: [u8; 2],
    /// SGX TCB component SVNs 1..16.
    pub sgx_components: [u8; 16],
    /// PCE SVN.
    pub pcesvn: u16,
}

fn bad(m: &str) -> Error {
    Error::Malformed {
        platform: "tdx",
        message: format!("PCK certificate SGX extensions: {m}"),
    }
}

/// One DER TLV: (tag, value, rest).
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first().ok_or_else(|| bad("truncated"))?;
    let (&first, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7F) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return Err(bad("bad length"));
        }
        (
            rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize),
            &rest[n..],
        )
    };
    if rest.len() < len {
        return Err(bad("value runs past its container"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The children of a SEQUENCE value.
fn children(mut b: &[u8]) -> Result<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (t, v, rest) = tlv(b)?;
        out.push((t, v));
        b = rest;
    }
    Ok(out)
}

fn uint(v: &[u8]) -> Result<u16> {
    if v.is_empty() || v.len() > 3 || (v.len() == 3 && v[0] != 0) {
        return Err(bad("integer out of range"));
    }
    Ok(v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) as u16)
}

/// Reads the SGX extensions of a PCK certificate.
pub fn pck_tcb(pck: &Cert) -> Result<PckTcb> {
    let ext = pck
        .extension("1.2.840.113741.1.13.1")
        .ok_or_else(|| bad("absent"))?;
    let (tag, seq, _) = tlv(ext)?;
    if tag != 0x30 {
        return Err(bad("not a SEQUENCE"));
    }
    let (mut fmspc, mut pce_id, mut tcb) = (None, None, None);
    for (t, item) in children(seq)? {
        if t != 0x30 {
            return Err(bad("entry is not a SEQUENCE"));
        }
        let kids = children(item)?;
        let [(0x06, oid), (_, value)] = kids.as_slice() else {
            return Err(bad("entry is not (OID, value)"));
        };
        match oid.strip_prefix(SGX_EXT) {
            Some([4]) => {
                fmspc = Some(<[u8; 6]>::try_from(*value).map_err(|_| bad("FMSPC is not 6 bytes"))?)
            }
            Some([3]) => {
                pce_id =
                    Some(<[u8; 2]>::try_from(*value).map_err(|_| bad("PCE-ID is not 2 bytes"))?)
            }
            Some([2]) => {
                let mut comps = [0u8; 16];
                let mut pcesvn = None;
                for (t, c) in children(value)? {
                    if t != 0x30 {
                        return Err(bad("TCB entry is not a SEQUENCE"));
                    }
                    let kids = children(c)?;
                    let [(0x06, oid), (t, v)] = kids.as_slice() else {
                        return Err(bad("TCB entry is not (OID, value)"));
                    };
                    match oid.strip_prefix(SGX_EXT).and_then(|r| r.strip_prefix(&[2])) {
                        Some([n @ 1..=16]) if *t == 0x02 => {
                            comps[*n as usize - 1] = uint(v)?
                                .try_into()
                                .map_err(|_| bad("component SVN above 255"))?
                        }
                        Some([17]) if *t == 0x02 => pcesvn = Some(uint(v)?),
                        _ => {} // CPUSVN (18) repeats the components as bytes
                    }
                }
                tcb = Some((comps, pcesvn.ok_or_else(|| bad("no PCESVN"))?));
            }
            _ => {}
        }
    }
    let (sgx_components, pcesvn) = tcb.ok_or_else(|| bad("no TCB"))?;
    Ok(PckTcb {
        fmspc: fmspc.ok_or_else(|| bad("no FMSPC"))?,
        pce_id: pce_id.ok_or_else(|| bad("no PCE-ID"))?,
        sgx_components,
        pcesvn,
    })
}
