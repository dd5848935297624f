//! What a verifier accepts beyond valid signatures: `--policy POLICY.toml` (docs/policy.md).
//!
//! Fails closed: unknown keys are an error, `Revoked` can never be accepted, debug is refused
//! unless `allow_debug = true`, and without a policy only `UpToDate` is accepted.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// A verification policy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Platforms accepted (`tdx`, `snp`, `dev`); empty: any but `dev`.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// TCB statuses accepted; empty: `UpToDate` only.
    #[serde(default)]
    pub accept_tcb_status: Vec<String>,
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

/// Intel's TCB statuses from best to worst (`Revoked` last; a policy may never accept it).
pub const TCB_STATUSES: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
];

impl Policy {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |m: String| Error::Selection(format!("policy: {m}"));
        let p: Policy = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for s in &p.accept_tcb_status {
            if s == "Revoked" {
                return Err(bad("Revoked can never be accepted".into()));
            }
            if !TCB_STATUSES.contains(&s.as_str()) {
                return Err(bad(format!("unknown TCB status {s:?}")));
            }
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

    /// Whether `status` is accepted.
    pub fn accepts_status(&self, status: &str) -> bool {
        status != "Revoked"
            && (if self.accept_tcb_status.is_empty() {
                status == "UpToDate"
            } else {
                self.accept_tcb_status.iter().any(|s| s == status)
            })
    }

    /// Reasons why the fields of a verified piece of evidence (`appraisal::verify`'s JSON)
    /// break the policy; each names the field, the value and what was allowed.
    pub fn violations(&self, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let platform = v["platform"].as_str().unwrap_or("");
        if !self.platforms.is_empty() && !self.platforms.iter().any(|p| p == platform) {
            out.push(format!(
                "platform {platform} is not among the allowed {:?}",
                self.platforms
            ));
        }
        let fields = match platform {
            "tdx" => Some(&self.tdx),
            "snp" => Some(&self.snp.fields),
            _ => None,
        };
        for (field, allowed) in fields.into_iter().flatten() {
            let value = match &v[field.as_str()] {
                Value::String(s) => s.clone(),
                Value::Null => {
                    // A field the evidence does not report never matches.
                    out.push(format!(
                        "{platform} {field} is not reported by this evidence; the policy allows only {allowed:?}"
                    ));
                    continue;
                }
                other => other.to_string(),
            };
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
                out.push(format!(
                    "{platform} {field} {value} is not among the allowed {allowed:?}"
                ));
            }
        }
        if let (Some(min), "snp") = (&self.snp.min_tcb, platform) {
            let t = &v["reported_tcb_decoded"];
            for (name, want) in [
                ("bootloader", min.bootloader),
                ("tee", min.tee),
                ("snp", min.snp),
                ("microcode", min.microcode),
                ("fmc", min.fmc),
            ] {
                let have = t[name].as_u64().unwrap_or(0);
                if have < u64::from(want) {
                    out.push(format!(
                        "snp reported TCB {name} {have} is below the minimum {want}"
                    ));
                }
            }
        }
        if self.require_gpu_evidence {
            out.push(
                "the policy requires GPU evidence (require_gpu_evidence), and this is CPU evidence alone; \
                 verify a receipt or key document that carries it (gpus)"
                    .into(),
            );
        }
        if let Some(rd) = &self.report_data {
            if !v["report_data"]
                .as_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(rd))
            {
                out.push(format!(
                    "report_data {} is not the policy's {rd}",
                    v["report_data"]
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_fail_closed() {
        assert!(Policy::parse("accept_tcb_status = [\"Revoked\"]").is_err());
        assert!(
            Policy::parse("allow_debugging = true").is_err(),
            "typo must not pass"
        );
        assert!(Policy::parse("[tdx]\nmrtdd = [\"00\"]").is_err());
        assert!(Policy::parse("platforms = [\"sgx\"]").is_err());
        let p = Policy::parse("").unwrap();
        assert!(p.accepts_status("UpToDate") && !p.accepts_status("OutOfDate"));
        let p = Policy::parse("accept_tcb_status = [\"UpToDate\", \"SWHardeningNeeded\"]").unwrap();
        assert!(p.accepts_status("SWHardeningNeeded") && !p.accepts_status("Revoked"));
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
        let v = serde_json::json!({"platform": "tdx", "mrtd": "bb"});
        assert!(Policy::parse("require_gpu_evidence = false")
            .unwrap()
            .violations(&v)
            .is_empty());
        let reasons = Policy::parse("require_gpu_evidence = true")
            .unwrap()
            .violations(&v);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("requires GPU evidence"), "{reasons:?}");
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
        let p =
            Policy::parse("[snp]\nfamily_id = [\"00\"]\npolicy = [\"0x30000\"]\nvmpl = [\"0\"]")
                .unwrap();
        let v = serde_json::json!({"platform": "snp", "policy": "0x30000", "vmpl": 0});
        let reasons = p.violations(&v);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains("family_id is not reported"),
            "{reasons:?}"
        );
    }

    #[test]
    fn violations_name_field_value_and_allowed() {
        let p = Policy::parse("platforms = [\"tdx\"]\n[tdx]\nmrtd = [\"AA\"]\n").unwrap();
        let v = serde_json::json!({"platform": "tdx", "mrtd": "bb"});
        assert_eq!(
            p.violations(&v),
            vec!["tdx mrtd bb is not among the allowed [\"AA\"]".to_owned()]
        );
        assert!(p
            .violations(&serde_json::json!({"platform": "tdx", "mrtd": "aa"}))
            .is_empty());
        let p = Policy::parse("[snp]\nmeasurement = [\"01\"]\nmin_tcb = { snp = 9 }\n").unwrap();
        let v = serde_json::json!({"platform": "snp", "measurement": "01", "reported_tcb_decoded": {"snp": 8}});
        assert_eq!(p.violations(&v).len(), 1);
    }
}
