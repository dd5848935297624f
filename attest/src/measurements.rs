//! What a piece of evidence says about the guest that made it, per platform: the parsed TDX
//! quote, SEV-SNP report or dev structure. A policy compares these fields; JSON is made from
//! them only at the edge ([`Measurements::to_json`], `attest inspect`).

use serde_json::{json, Value};

use crate::dev::DevEvidence;
use crate::error::Result;
use crate::evidence::{Evidence, Platform};
use crate::snp::report::SnpReport;
use crate::tdx::quote::TdxQuote;

/// The parsed evidence of one platform.
#[derive(Clone, Debug)]
pub enum Measurements {
    /// A TDX quote (v4 or v5).
    Tdx(Box<TdxQuote>),
    /// An SEV-SNP attestation report.
    Snp(Box<SnpReport>),
    /// The insecure development stand-in.
    Dev(DevEvidence),
}

impl Measurements {
    /// Parses the evidence's quote or report (no signature is checked here).
    pub fn parse(e: &Evidence) -> Result<Self> {
        Ok(match e.platform {
            Platform::Tdx => Measurements::Tdx(Box::new(TdxQuote::parse(&e.quote)?)),
            Platform::Snp => Measurements::Snp(Box::new(SnpReport::parse(&e.quote)?)),
            Platform::Dev => Measurements::Dev(DevEvidence::parse(&e.quote)?),
        })
    }

    /// Which platform made it.
    pub fn platform(&self) -> Platform {
        match self {
            Measurements::Tdx(_) => Platform::Tdx,
            Measurements::Snp(_) => Platform::Snp,
            Measurements::Dev(_) => Platform::Dev,
        }
    }

    /// The 64 bytes of report data.
    pub fn report_data(&self) -> &[u8; 64] {
        match self {
            Measurements::Tdx(q) => &q.report.report_data,
            Measurements::Snp(r) => &r.report_data,
            Measurements::Dev(d) => &d.report_data,
        }
    }

    /// Whether the guest or TD allows debugging (dev evidence: no).
    pub fn debug(&self) -> bool {
        match self {
            Measurements::Tdx(q) => q.report.debug(),
            Measurements::Snp(r) => r.debug_allowed(),
            Measurements::Dev(_) => false,
        }
    }

    /// A field a policy may name, in the form it is reported in (lowercase hex; the SNP guest
    /// `policy` as `0x…`, `vmpl` in decimal), or `None` when this evidence does not carry it
    /// (TDX `mrservicetd` before quote v5, or a field of another platform).
    pub fn field(&self, name: &str) -> Option<String> {
        match self {
            Measurements::Tdx(q) => {
                let r = &q.report;
                let bytes: &[u8] = match name {
                    "mrtd" => &r.mrtd,
                    "rtmr0" => &r.rtmr[0],
                    "rtmr1" => &r.rtmr[1],
                    "rtmr2" => &r.rtmr[2],
                    "rtmr3" => &r.rtmr[3],
                    "mrseam" => &r.mrseam,
                    "mrsignerseam" => &r.mrsignerseam,
                    "td_attributes" => &r.td_attributes,
                    "xfam" => &r.xfam,
                    "mrconfigid" => &r.mrconfigid,
                    "mrowner" => &r.mrowner,
                    "mrownerconfig" => &r.mrownerconfig,
                    "mrservicetd" => r.mrservicetd.as_ref()?,
                    _ => return None,
                };
                Some(hex::encode(bytes))
            }
            Measurements::Snp(r) => Some(match name {
                "measurement" => hex::encode(r.measurement),
                "host_data" => hex::encode(r.host_data),
                "policy" => format!("{:#x}", r.policy),
                "chip_id" => hex::encode(r.chip_id),
                "family_id" => hex::encode(r.family_id),
                "image_id" => hex::encode(r.image_id),
                "id_key_digest" => hex::encode(r.id_key_digest),
                "author_key_digest" => hex::encode(r.author_key_digest),
                "vmpl" => r.vmpl.to_string(),
                _ => return None,
            }),
            Measurements::Dev(_) => None,
        }
    }

    /// The fields as `attest inspect --json` prints them (docs/design.md §5).
    pub fn to_json(&self) -> Value {
        match self {
            Measurements::Tdx(q) => {
                let r = &q.report;
                let mut v = json!({
                    "platform": "tdx", "version": q.version, "body_type": q.body_type,
                    "report_data": hex::encode(r.report_data), "mrtd": hex::encode(r.mrtd),
                    "rtmr0": hex::encode(r.rtmr[0]), "rtmr1": hex::encode(r.rtmr[1]),
                    "rtmr2": hex::encode(r.rtmr[2]), "rtmr3": hex::encode(r.rtmr[3]),
                    "mrseam": hex::encode(r.mrseam), "mrsignerseam": hex::encode(r.mrsignerseam),
                    "td_attributes": hex::encode(r.td_attributes), "xfam": hex::encode(r.xfam),
                    "mrconfigid": hex::encode(r.mrconfigid), "mrowner": hex::encode(r.mrowner),
                    "mrownerconfig": hex::encode(r.mrownerconfig), "tee_tcb_svn": hex::encode(r.tee_tcb_svn),
                    "debug": r.debug(), "qe_isv_svn": q.qe_report.isv_svn, "trailing_bytes": q.trailing,
                });
                if let (Some(svn2), Some(st)) = (r.tee_tcb_svn2, r.mrservicetd) {
                    v["tee_tcb_svn2"] = hex::encode(svn2).into();
                    v["mrservicetd"] = hex::encode(st).into();
                }
                v
            }
            Measurements::Snp(r) => json!({
                "platform": "snp", "version": r.version, "report_data": hex::encode(r.report_data),
                "measurement": hex::encode(r.measurement), "host_data": hex::encode(r.host_data),
                "policy": format!("{:#x}", r.policy), "debug": r.debug_allowed(), "vmpl": r.vmpl,
                "chip_id": hex::encode(r.chip_id), "reported_tcb": hex::encode(r.reported_tcb),
                "guest_svn": r.guest_svn, "signing_key": format!("{:?}", r.signing_key),
                "family_id": hex::encode(r.family_id), "image_id": hex::encode(r.image_id),
                "id_key_digest": hex::encode(r.id_key_digest),
                "author_key_digest": hex::encode(r.author_key_digest),
            }),
            Measurements::Dev(d) => json!({
                "platform": "dev", "report_data": hex::encode(d.report_data),
                "public_key": hex::encode(&d.public_key),
                "note": "insecure development evidence: it proves nothing",
            }),
        }
    }
}
