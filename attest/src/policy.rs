//! What a verifier accepts beyond valid signatures: `--policy POLICY.toml` (docs/policy.md).
//!
//! Fails closed: unknown keys are an error, `Revoked` can never be accepted, debug is refused
//! unless `allow_debug = true`, and without a policy only `UpToDate` is accepted.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::evidence::Platform;
use crate::measurements::Measurements;
use crate::snp::report::TcbVersion;
use crate::tcb_status::TcbStatus;

/// A verification policy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Platforms accepted (`tdx`, `snp`, `dev`); empty: any but `dev`.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// TCB statuses accepted (Intel's level names; never `Revoked`); empty: `UpToDate` only.
    #[serde(default, deserialize_with = "intel_levels")]
    pub accept_tcb_status: Vec<TcbStatus>,
    /// Accept guests and TDs that allow debugging.
    #[serde(default)]
    pub allow_debug: bool,
    /// Model pins a receipt may name; empty: any.
    #[serde(default)]
    pub model_pins: Vec<String>,
    /// Oldest receipt accepted, seconds before the verification time.
    pub max_receipt_age_s: Option<u64>,
    /// Require NVIDIA confidential-computing GPU evidence beside the CPU's (receipts and key
    /// documents: `gpus`, each verified and bound; `attest verify` on CPU evidence alone is
    /// then rejected).
    #[serde(default)]
    pub require_gpu_evidence: bool,
    /// Report data the evidence must carry (hex), for `attest verify`.
    pub report_data: Option<String>,
    /// Allowed values per TDX field (`mrtd`, `rtmr0`..`rtmr3`, `mrseam`, `td_attributes`,
    /// `xfam`, `mrconfigid`, `mrowner`, `mrownerconfig`).
    #[serde(default)]
    pub tdx: BTreeMap<String, Vec<String>>,
    /// Allowed values per SNP field (`measurement`, `host_data`, `policy`, `chip_id`, …) and
    /// `min_tcb`.
    #[serde(default)]
    pub snp: SnpPolicy,
    /// NVIDIA GPU evidence rules.
    #[serde(default)]
    pub nvgpu: GpuPolicy,
}

/// `[nvgpu]`: what GPU evidence must show beyond valid signatures.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpuPolicy {
    /// Require good OCSP responses for every device and RIM certificate (default true).
    #[serde(default = "yes")]
    pub require_ocsp: bool,
    /// Oldest OCSP response accepted, seconds before the time of the check (default 90 days).
    #[serde(default = "ninety_days")]
    pub ocsp_max_age_s: u64,
    /// Driver versions allowed (`550.90.07`); empty: any with a valid RIM.
    #[serde(default)]
    pub driver_versions: Vec<String>,
    /// VBIOS versions allowed (`96.00.9F.00.01`, any case); empty: any with a valid RIM.
    #[serde(default)]
    pub vbios_versions: Vec<String>,
}

fn yes() -> bool {
    true
}

fn ninety_days() -> u64 {
    90 * 24 * 3600
}

impl Default for GpuPolicy {
    fn default() -> Self {
        GpuPolicy {
            require_ocsp: true,
            ocsp_max_age_s: ninety_days(),
            driver_versions: Vec::new(),
            vbios_versions: Vec::new(),
        }
    }
}

/// SNP-specific rules. (serde cannot deny unknown fields next to a flattened map; the
/// field names are checked in [`Policy::parse`] instead.)
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SnpPolicy {
    /// Minimum reported TCB.
    pub min_tcb: Option<MinTcb>,
    /// Allowed values per field.
    #[serde(flatten)]
    pub fields: BTreeMap<String, Vec<String>>,
}

/// Minimum SVNs of the reported TCB.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// Boot loader.
    #[serde(default)]
    pub bootloader: u8,
    /// TEE.
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware.
    #[serde(default)]
    pub snp: u8,
    /// Microcode.
    #[serde(default)]
    pub microcode: u8,
    /// FMC (Turin).
    #[serde(default)]
    pub fmc: u8,
}

const TDX_FIELDS: &[&str] = &[
    "mrtd",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "mrseam",
    "mrsignerseam",
    "td_attributes",
    "xfam",
    "mrconfigid",
    "mrowner",
    "mrownerconfig",
    "mrservicetd",
];
const SNP_FIELDS: &[&str] = &[
    "measurement",
    "host_data",
    "policy",
    "chip_id",
    "family_id",
    "image_id",
    "id_key_digest",
    "author_key_digest",
    "vmpl",
];
/// Whether `value` has the form `field` is reported in.
fn allowed_value_ok(field: &str, value: &str) -> bool {
    let hex = |v: &str| {
        !v.is_empty() && v.len().is_multiple_of(2) && v.bytes().all(|b| b.is_ascii_hexdigit())
    };
    match field {
        "policy" => value.strip_prefix("0x").is_some_and(|h| {
            !h.is_empty() && h.len() <= 16 && h.bytes().all(|b| b.is_ascii_hexdigit())
        }),
        "vmpl" => {
            !value.is_empty() && value.len() <= 3 && value.bytes().all(|b| b.is_ascii_digit())
        }
        _ => value.len() <= 256 && hex(value),
    }
}

/// Reads Intel level names; anything else is an error naming it.
fn intel_levels<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<TcbStatus>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|name| match TcbStatus::from_intel(name) {
            TcbStatus::Unknown(_) => Err(serde::de::Error::custom(format!(
                "unknown TCB status {name:?}"
            ))),
            s => Ok(s),
        })
        .collect()
}

/// A rule of the policy that evidence breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The platform is not among those allowed.
    Platform {
        /// The evidence's platform.
        platform: Platform,
        /// The policy's `platforms`.
        allowed: Vec<String>,
    },
    /// An allow-listed field this evidence does not carry (a missing field never matches).
    FieldNotReported {
        /// The evidence's platform.
        platform: Platform,
        /// The field's name.
        field: String,
        /// The values allowed.
        allowed: Vec<String>,
    },
    /// A field whose value is not allowed.
    Field {
        /// The evidence's platform.
        platform: Platform,
        /// The field's name.
        field: String,
        /// Its value as reported.
        value: String,
        /// The values allowed.
        allowed: Vec<String>,
    },
    /// An SNP reported TCB component below the policy's `min_tcb`.
    TcbBelowMinimum {
        /// `bootloader`, `tee`, `snp`, `microcode` or `fmc`.
        component: &'static str,
        /// The reported SVN (0 when the reported TCB could not be decoded).
        have: u8,
        /// The minimum.
        min: u8,
    },
    /// GPU evidence is required and this is CPU evidence alone.
    GpuEvidenceRequired,
    /// The report data is not the policy's `report_data`.
    ReportData {
        /// The evidence's report data, hex.
        have: String,
        /// The policy's.
        want: String,
    },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Platform { platform, allowed } => {
                write!(f, "platform {platform} is not among the allowed {allowed:?}")
            }
            Violation::FieldNotReported {
                platform,
                field,
                allowed,
            } => write!(
                f,
                "{platform} {field} is not reported by this evidence; the policy allows only {allowed:?}"
            ),
            Violation::Field {
                platform,
                field,
                value,
                allowed,
            } => write!(
                f,
                "{platform} {field} {value} is not among the allowed {allowed:?}"
            ),
            Violation::TcbBelowMinimum {
                component,
                have,
                min,
            } => write!(
                f,
                "snp reported TCB {component} {have} is below the minimum {min}"
            ),
            Violation::GpuEvidenceRequired => f.write_str(
                "the policy requires GPU evidence (require_gpu_evidence), and this is CPU evidence alone; \
                 verify a receipt or key document that carries it (gpus)",
            ),
            Violation::ReportData { have, want } => {
                write!(f, "report_data {have:?} is not the policy's {want}")
            }
        }
    }
}

impl Policy {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |m: String| Error::Selection(format!("policy: {m}"));
        let p: Policy = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if p.accept_tcb_status.contains(&TcbStatus::Revoked) {
            return Err(bad("Revoked can never be accepted".into()));
        }
        for pl in &p.platforms {
            if !["tdx", "snp", "dev"].contains(&pl.as_str()) {
                return Err(bad(format!("unknown platform {pl:?}")));
            }
        }
        if let Some(k) = p.tdx.keys().find(|k| !TDX_FIELDS.contains(&k.as_str())) {
            return Err(bad(format!("unknown TDX field {k:?}")));
        }
        if let Some(k) = p
            .snp
            .fields
            .keys()
            .find(|k| !SNP_FIELDS.contains(&k.as_str()))
        {
            return Err(bad(format!("unknown SNP field {k:?}")));
        }
        // An allowed value is what the evidence reports for that field: hex digits of even
        // length, `0x…` for the SNP guest policy, a number for the VMPL. An empty or malformed
        // value could only match by accident (or match a field the report lacks): refused.
        let lists = p
            .tdx
            .iter()
            .map(|(k, v)| ("tdx", k, v))
            .chain(p.snp.fields.iter().map(|(k, v)| ("snp", k, v)));
        for (platform, field, allowed) in lists {
            if allowed.is_empty() {
                return Err(bad(format!(
                    "{platform} {field}: an empty list allows nothing"
                )));
            }
            for value in allowed {
                if !allowed_value_ok(field, value) {
                    return Err(bad(format!(
                        "{platform} {field}: {:?} is not a value this field can have",
                        value.chars().take(80).collect::<String>()
                    )));
                }
            }
        }
        for pin in &p.model_pins {
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "model_pins: {:?} is not 64 hexadecimal digits",
                    pin.chars().take(80).collect::<String>()
                )));
            }
        }
        Ok(p)
    }

    /// Reads a policy file.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bytes = crate::input::read_bounded(path, crate::input::MAX_POLICY_BYTES)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Selection(format!("policy {}: not UTF-8", path.display())))?;
        Self::parse(&text)
    }

    /// Whether `status` is accepted: one of `accept_tcb_status` (empty: `UpToDate`), never
    /// `Revoked`, never a status that is not one of Intel's levels.
    pub fn accepts_status(&self, status: &TcbStatus) -> bool {
        *status != TcbStatus::Revoked
            && (if self.accept_tcb_status.is_empty() {
                *status == TcbStatus::UpToDate
            } else {
                self.accept_tcb_status.contains(status)
            })
    }

    /// The rules `m` breaks; `reported_tcb` is the SNP reported TCB as decoded for the chain's
    /// product (`None`: unknown, every component read as 0).
    pub fn violations(
        &self,
        m: &Measurements,
        reported_tcb: Option<&TcbVersion>,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        let platform = m.platform();
        if !self.platforms.is_empty() && !self.platforms.iter().any(|p| p == platform.as_str()) {
            out.push(Violation::Platform {
                platform,
                allowed: self.platforms.clone(),
            });
        }
        let fields = match platform {
            Platform::Tdx => Some(&self.tdx),
            Platform::Snp => Some(&self.snp.fields),
            Platform::Dev => None,
        };
        for (field, allowed) in fields.into_iter().flatten() {
            match m.field(field) {
                None => out.push(Violation::FieldNotReported {
                    platform,
                    field: field.clone(),
                    allowed: allowed.clone(),
                }),
                Some(value) if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) => {
                    out.push(Violation::Field {
                        platform,
                        field: field.clone(),
                        value,
                        allowed: allowed.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        if let (Some(min), Platform::Snp) = (&self.snp.min_tcb, platform) {
            let t = reported_tcb.copied().unwrap_or_default();
            for (component, have, min) in [
                ("bootloader", t.bootloader, min.bootloader),
                ("tee", t.tee, min.tee),
                ("snp", t.snp, min.snp),
                ("microcode", t.microcode, min.microcode),
                ("fmc", t.fmc, min.fmc),
            ] {
                if have < min {
                    out.push(Violation::TcbBelowMinimum {
                        component,
                        have,
                        min,
                    });
                }
            }
        }
        if self.require_gpu_evidence {
            out.push(Violation::GpuEvidenceRequired);
        }
        if let Some(want) = &self.report_data {
            let have = hex::encode(m.report_data());
            if !have.eq_ignore_ascii_case(want) {
                out.push(Violation::ReportData {
                    have,
                    want: want.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parsed evidence of a test vector.
    fn measured(path: &str) -> Measurements {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/vectors")
                .join(path),
        )
        .unwrap();
        Measurements::parse(&crate::appraisal::evidence_from_bytes(&bytes).unwrap()).unwrap()
    }

    #[test]
    fn policies_fail_closed() {
        assert!(Policy::parse("accept_tcb_status = [\"Revoked\"]").is_err());
        let unknown = Policy::parse("accept_tcb_status = [\"UpToDat\"]").unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("unknown TCB status \"UpToDat\""),
            "{unknown}"
        );
        assert!(Policy::parse("accept_tcb_status = [\"NotApplicable\"]").is_err());
        assert!(
            Policy::parse("allow_debugging = true").is_err(),
            "typo must not pass"
        );
        assert!(Policy::parse("[tdx]\nmrtdd = [\"00\"]").is_err());
        assert!(Policy::parse("platforms = [\"sgx\"]").is_err());
        let p = Policy::parse("").unwrap();
        assert!(p.accepts_status(&TcbStatus::UpToDate) && !p.accepts_status(&TcbStatus::OutOfDate));
        let p = Policy::parse("accept_tcb_status = [\"UpToDate\", \"SWHardeningNeeded\"]").unwrap();
        assert!(p.accepts_status(&TcbStatus::SwHardeningNeeded));
        for never in [
            TcbStatus::Revoked,
            TcbStatus::Unverified,
            TcbStatus::NoMatchingTcbLevel,
            TcbStatus::Unknown("UpToDate ".into()),
        ] {
            assert!(!p.accepts_status(&never), "{never}");
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../docs/policy.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/policy.md has a toml block")
            + 8;
        let len = doc[start..].find("```").expect("the toml block ends");
        let p = Policy::parse(&doc[start..start + len]).unwrap();
        assert_eq!(p.platforms, ["tdx", "snp"]);
        assert!(!p.require_gpu_evidence && p.snp.min_tcb.is_some());
        assert_eq!(p.nvgpu.driver_versions, ["550.90.07"]);
        assert!(p.nvgpu.require_ocsp && p.nvgpu.ocsp_max_age_s == 90 * 86400);
        // Defaults when the section is absent; unknown keys refused.
        assert_eq!(Policy::parse("").unwrap().nvgpu, GpuPolicy::default());
        assert!(Policy::parse("[nvgpu]\nrequire_oscp = false").is_err());
    }

    #[test]
    fn requiring_gpu_evidence_is_never_silently_met() {
        let m = measured("tdx/dcapqvl-v4-uptodate/quote.dat");
        assert!(Policy::parse("require_gpu_evidence = false")
            .unwrap()
            .violations(&m, None)
            .is_empty());
        let reasons = Policy::parse("require_gpu_evidence = true")
            .unwrap()
            .violations(&m, None);
        assert_eq!(reasons, [Violation::GpuEvidenceRequired]);
        assert!(reasons[0].to_string().contains("requires GPU evidence"));
    }

    #[test]
    fn allow_lists_hold_only_values_a_field_can_have() {
        // Found by an attacker: `family_id = [""]` matched a field the report lacked.
        for bad in [
            "[snp]\nfamily_id = [\"\"]",
            "[snp]\nfamily_id = []",
            "[tdx]\nmrtd = [\"zz\"]",
            "[tdx]\nmrtd = [\"abc\"]",
            "[snp]\npolicy = [\"30000\"]",
            "[snp]\nvmpl = [\"x\"]",
            "model_pins = [\"\"]",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
        // The SNP fields the docs name are each compared (virtee's report: family id zero,
        // guest policy 0x30000, VMPL 0).
        let m = measured("snp/virtee-milan-vcek/report.bin");
        let p = Policy::parse(
            "[snp]\nfamily_id = [\"00000000000000000000000000000000\"]\npolicy = [\"0x30000\"]\nvmpl = [\"0\"]",
        )
        .unwrap();
        assert_eq!(p.violations(&m, None), []);
        let p = Policy::parse("[snp]\nimage_id = [\"01\"]\nvmpl = [\"1\"]").unwrap();
        assert_eq!(p.violations(&m, None).len(), 2);
        // A field a quote v4 does not carry never matches.
        let m = measured("tdx/dcapqvl-v4-uptodate/quote.dat");
        let p = Policy::parse(&format!("[tdx]\nmrservicetd = [\"{}\"]", "00".repeat(48))).unwrap();
        let reasons = p.violations(&m, None);
        assert!(
            matches!(&reasons[..], [Violation::FieldNotReported { field, .. }] if field == "mrservicetd"),
            "{reasons:?}"
        );
        assert!(reasons[0]
            .to_string()
            .contains("mrservicetd is not reported"));
    }

    #[test]
    fn violations_name_field_value_and_allowed() {
        let m = measured("tdx/dcapqvl-v4-uptodate/quote.dat");
        let mrtd = m.field("mrtd").unwrap();
        let p = Policy::parse("platforms = [\"tdx\"]\n[tdx]\nmrtd = [\"AA\"]\n").unwrap();
        assert_eq!(
            p.violations(&m, None)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [format!("tdx mrtd {mrtd} is not among the allowed [\"AA\"]")]
        );
        let p = Policy::parse(&format!("[tdx]\nmrtd = [\"{}\"]", mrtd.to_uppercase())).unwrap();
        assert!(p.violations(&m, None).is_empty());
        let p = Policy::parse("platforms = [\"snp\"]").unwrap();
        assert!(matches!(
            &p.violations(&m, None)[..],
            [Violation::Platform {
                platform: Platform::Tdx,
                ..
            }]
        ));
        // Minimum TCB: each component below it is one violation; unknown reads as 0.
        let m = measured("snp/virtee-milan-vcek/report.bin");
        let p = Policy::parse("[snp]\nmin_tcb = { snp = 9, bootloader = 3 }\n").unwrap();
        let tcb = TcbVersion {
            bootloader: 3,
            snp: 8,
            ..Default::default()
        };
        assert_eq!(p.violations(&m, Some(&tcb)).len(), 1);
        assert_eq!(p.violations(&m, None).len(), 2);
    }
}
