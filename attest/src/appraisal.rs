//! Evidence as a whole: recognising raw bytes, parsing their fields (`attest inspect`) and
//! appraising them (`attest verify`) into a typed [`Appraisal`], whose JSON carries the fields
//! docs/design.md §5 fixes: `platform`, `verdict`, `reasons`, `report_data`, `tcb_status`, and
//! per platform the measurements.
//!
//! Verdicts fail closed: `ok` needs every check this build performs to pass and a TCB status of
//! `UpToDate`; SNP guests and TDs that allow debugging are rejected unless allowed; TDX quotes
//! need DCAP collateral.

use serde_json::Value;

use crate::dev::MAGIC;
use crate::error::{Error, Result};
use crate::evidence::{Evidence, Platform, SNP_REPORT_LEN};
use crate::measurements::Measurements;
use crate::policy::Policy;
use crate::snp::chain::{parse_certs, Roots};
use crate::snp::crl::parse_collateral;
use crate::snp::verify::verify_snp;
use crate::tcb_status::TcbStatus;
use crate::tdx::collateral::Collateral;
use crate::tdx::verify::verify_tdx;
use crate::verdict::{Appraisal, Findings, Reason};

/// Recognises raw evidence: dev structure, TDX quote v4/v5, SNP report (1184 bytes).
pub fn detect(bytes: &[u8]) -> Option<Platform> {
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bytes.starts_with(MAGIC) {
        Some(Platform::Dev)
    } else if matches!(u16_at(0), Some(4 | 5)) && u16_at(2) == Some(2) && u32_at(4) == Some(0x81) {
        Some(Platform::Tdx)
    } else if bytes.len() == SNP_REPORT_LEN && matches!(u32_at(0), Some(2 | 3 | 5)) {
        Some(Platform::Snp)
    } else {
        None
    }
}

/// Evidence from raw bytes, or from a receipt's evidence JSON object.
pub fn evidence_from_bytes(bytes: &[u8]) -> Result<Evidence> {
    if let Some(platform) = detect(bytes) {
        return Ok(Evidence {
            platform,
            quote: bytes.to_vec(),
            certs: None,
            provider: String::new(),
        });
    }
    let unknown = || {
        Error::Selection("unrecognised evidence: not a TDX quote v4/v5, an SNP report, dev evidence or a receipt's evidence JSON".into())
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|_| unknown())?;
    let v = v.get("evidence").unwrap_or(&v);
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| Error::Selection(format!("evidence is not base64: {e}")))
    };
    let quote = b64(v.get("quote").and_then(Value::as_str).ok_or_else(unknown)?)?;
    let platform = detect(&quote).ok_or_else(unknown)?;
    if v.get("platform").and_then(Value::as_str) != Some(platform.as_str()) {
        return Err(Error::Selection(format!(
            "evidence says platform {:?} but holds {platform} bytes",
            v.get("platform")
        )));
    }
    let certs = v
        .get("certs")
        .and_then(Value::as_str)
        .map(b64)
        .transpose()?;
    Ok(Evidence {
        platform,
        quote,
        certs,
        provider: v
            .get("provider")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// The parsed fields, no verdict.
pub fn inspect(e: &Evidence) -> Result<Measurements> {
    Measurements::parse(e)
}

/// What verification may rely on besides the evidence.
#[derive(Clone, Debug, Default)]
pub struct AppraisalInput {
    /// Certificate files (PEM, DER or SEV certificate tables) from `--collateral`.
    pub cert_files: Vec<Vec<u8>>,
    /// Time of the check, Unix seconds.
    pub at: u64,
    /// Report data the evidence must carry.
    pub report_data: Option<[u8; 64]>,
    /// Accept dev evidence.
    pub allow_dev: bool,
    /// Accept a guest or TD that allows debugging.
    pub allow_debug: bool,
    /// DCAP collateral for TDX quotes.
    pub tdx: Option<Collateral>,
    /// Allowed measurements, statuses, platforms.
    pub policy: Option<Policy>,
}

impl AppraisalInput {
    fn debug_allowed(&self) -> bool {
        self.allow_debug || self.policy.as_ref().is_some_and(|p| p.allow_debug)
    }
}

/// Appraises `e`: the platform's checks, debugging, report data, TCB status and the policy.
/// An `Err` is evidence that cannot be parsed (or collateral that cannot be read); everything
/// else is an [`Appraisal`], accepted or with its reasons.
pub fn verify(e: &Evidence, a: &AppraisalInput) -> Result<Appraisal> {
    let measurements = Measurements::parse(e)?;
    let mut reasons: Vec<Reason> = Vec::new();
    let (tcb_status, findings) = match &measurements {
        Measurements::Snp(report) => {
            let (mut certs, crls) = parse_collateral(&a.cert_files)?;
            if let Some(table) = &e.certs {
                certs.extend(parse_certs(table)?);
            }
            let verdict = verify_snp(report, &certs, &crls, a.at, Roots::Amd);
            reasons.extend(verdict.reasons.into_iter().map(Reason::Check));
            let findings = Findings::Snp {
                crl_checked: verdict.crl_checked,
                product: verdict.product,
                reported_tcb: verdict.reported_tcb,
            };
            (verdict.tcb_status, findings)
        }
        Measurements::Tdx(q) => match &a.tdx {
            None => {
                reasons.push(Reason::NoCollateral);
                (TcbStatus::Unverified, Findings::None)
            }
            Some(c) => {
                let verdict = verify_tdx(q, c, a.at);
                reasons.extend(verdict.reasons.into_iter().map(Reason::Check));
                let findings = Findings::Tdx {
                    fmspc: verdict.fmspc,
                    advisory_ids: verdict.advisory_ids,
                };
                let status = verdict.tcb_status.unwrap_or(TcbStatus::NoMatchingTcbLevel);
                (status, findings)
            }
        },
        Measurements::Dev(_) => {
            if !a.allow_dev {
                reasons.push(Reason::DevEvidence);
            }
            (TcbStatus::NotApplicable, Findings::None)
        }
    };
    if measurements.debug() && !a.debug_allowed() {
        reasons.push(Reason::DebugAllowed {
            snp_policy: match &measurements {
                Measurements::Snp(r) => Some(r.policy),
                _ => None,
            },
        });
    }
    if a.report_data
        .is_some_and(|want| *measurements.report_data() != want)
    {
        reasons.push(Reason::ReportDataDiffers);
    }
    let accepted = a
        .policy
        .as_ref()
        .map_or(tcb_status == TcbStatus::UpToDate, |p| {
            p.accepts_status(&tcb_status)
        });
    if e.platform != Platform::Dev && !accepted && reasons.is_empty() {
        reasons.push(Reason::TcbStatusNotAccepted(tcb_status.clone()));
    }
    if let Some(p) = &a.policy {
        let reported_tcb = match &findings {
            Findings::Snp { reported_tcb, .. } => reported_tcb.as_ref(),
            _ => None,
        };
        reasons.extend(
            p.violations(&measurements, reported_tcb)
                .into_iter()
                .map(Reason::Policy),
        );
    }
    Ok(Appraisal {
        measurements,
        tcb_status,
        reasons,
        findings,
        policy_applied: a.policy.is_some(),
    })
}

/// Reads `--collateral PATH` for `platform`: DCAP collateral for TDX (a dcap-qvl JSON bundle, or
/// a directory of PCS files or holding `collateral.json`), certificate files otherwise.
pub fn load_collateral(
    path: &std::path::Path,
    platform: Platform,
) -> Result<(Vec<Vec<u8>>, Option<Collateral>)> {
    match platform {
        Platform::Tdx => Ok((Vec::new(), Some(Collateral::read(path)?))),
        _ => Ok((read_collateral(path)?, None)),
    }
}

/// Certificate files from `--collateral PATH`: the file itself, or every `*.pem`, `*.der`,
/// `*.crt`, `*.cer` and `*.crl` file of a directory (certificates told apart later by subject,
/// not by name; CRLs by their issuer).
pub fn read_collateral(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        error: source,
    };
    if !path.is_dir() {
        return Ok(vec![crate::input::read_bounded(
            path,
            crate::input::MAX_EVIDENCE_BYTES,
        )?]);
    }
    let mut files: Vec<_> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["pem", "der", "crt", "cer", "crl"].contains(&x))
        })
        .collect();
    files.sort();
    if files.len() > 256 {
        return Err(Error::Selection(format!(
            "{}: {} collateral files, more than the 256 read",
            path.display(),
            files.len()
        )));
    }
    files
        .iter()
        .map(|f| crate::input::read_bounded(f, crate::input::MAX_EVIDENCE_BYTES))
        .collect()
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds of an RFC 3339 UTC time (`2025-07-19T10:00:34Z`; `+00:00` for `Z`; up to nine
/// fractional digits, which are dropped). Parsed with the `time` crate; besides what RFC 3339
/// itself forbids, times before 1970, leap seconds (second 60), other offsets than UTC and
/// anything not ASCII are refused, so that one instant has one reading.
pub fn parse_rfc3339(s: &str) -> Result<u64> {
    use time::format_description::well_known::Rfc3339;
    let shown: String = s.chars().take(40).collect();
    let bad = |why: &str| {
        Error::Selection(format!(
            "time {shown:?} is not an RFC 3339 UTC time ({why})"
        ))
    };
    if !s.is_ascii() || s.len() > 40 {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SSZ"));
    }
    let b = s.as_bytes();
    // Second 60 (a leap second) would read as 59 or as the next minute: refused.
    if b.len() > 19 && &b[17..19] == b"60" {
        return Err(bad("second 60"));
    }
    if let Some(frac) = s.get(19..).and_then(|r| r.strip_prefix('.')) {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad("1 to 9 fractional digits"));
        }
    }
    if !(s.ends_with('Z') || s.ends_with('z') || s.ends_with("+00:00")) {
        return Err(bad("not UTC"));
    }
    let t = time::OffsetDateTime::parse(s, &Rfc3339).map_err(|e| bad(&e.to_string()))?;
    u64::try_from(t.unix_timestamp()).map_err(|_| bad("before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(path: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/vectors")
                .join(path),
        )
        .unwrap()
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("2025-07-19T10:00:34Z").unwrap(),
            1_752_919_234
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.123Z").unwrap(),
            951_782_400
        );
        assert_eq!(
            parse_rfc3339("2025-07-19T10:00:34.999999999+00:00").unwrap(),
            1_752_919_234
        );
        for bad in [
            "",
            "2025-07-19",
            "2025-13-01T00:00:00Z",
            "2025-07-19T10:00:34+02:00",
            "x025-07-19T10:00:34Z",
            // Found by an attacker: a non-ASCII character panicked, 27 fractional digits were
            // accepted, impossible dates and second 60 were accepted.
            "2026-11-29T18:40:1éZ",
            "2026-11-29T18:40:1\u{e9}Z",
            "2026-11-29T18:40:10.123456789012345678901234567Z",
            "2026-02-31T00:00:00Z",
            "2026-11-29T23:59:60Z",
            "2026-11-29T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-11-29T18:40:10.Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verdicts_on_the_real_vectors() {
        let at = parse_rfc3339("2026-11-24T00:00:00Z").unwrap();
        let snp_input = |dir: &str| AppraisalInput {
            cert_files: vec![
                vector(&format!("snp/{dir}/vcek.der")),
                vector(&format!("snp/{dir}/ask_ark.pem")),
            ],
            at,
            ..Default::default()
        };
        let snp = |dir: &str, a: &AppraisalInput| {
            let e = evidence_from_bytes(&vector(&format!("snp/{dir}/report.bin"))).unwrap();
            verify(&e, a).unwrap()
        };
        let v = snp("virtee-milan-vcek", &snp_input("virtee-milan-vcek"));
        assert!(v.accepted(), "{:?}", v.reasons);
        assert_eq!(v.tcb_status, TcbStatus::UpToDate);
        let j = v.to_json();
        assert_eq!(j["verdict"], "ok");
        assert_eq!(j["tcb_status"], "UpToDate");
        assert_eq!(j["measurement"], "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f");
        assert!(
            j["amd_crl"].as_str().unwrap().starts_with("none given"),
            "{j}"
        );
        // Without a policy the report says no measurement was compared, in its own field: the
        // SNP guest `policy` field is the guest's (it was overwritten by that note once).
        assert_eq!(j["policy"], "0x30000");
        assert!(
            j["verifier_policy"].as_str().unwrap().starts_with("none:"),
            "{j}"
        );
        // The SNP policy fields the docs name are reported, so a policy can name them.
        for f in [
            "family_id",
            "image_id",
            "id_key_digest",
            "author_key_digest",
        ] {
            assert!(j[f].as_str().is_some_and(|h| h.len() >= 32), "{f}: {j}");
        }
        let family = j["family_id"].as_str().unwrap().to_owned();
        let with_policy = |text: &str| AppraisalInput {
            policy: Some(Policy::parse(text).unwrap()),
            ..snp_input("virtee-milan-vcek")
        };
        let v = snp(
            "virtee-milan-vcek",
            &with_policy(&format!("[snp]\nfamily_id = [\"{family}\"]")),
        );
        assert!(v.accepted(), "{:?}", v.reasons);
        assert!(v.to_json().get("verifier_policy").is_none());
        // A policy's minimum TCB is compared with the reported TCB decoded for the chain's
        // product (bootloader 3, snp 8 here).
        let v = snp(
            "virtee-milan-vcek",
            &with_policy("[snp]\nmin_tcb = { snp = 9 }"),
        );
        assert_eq!(
            v.reasons,
            [Reason::Policy(crate::policy::Violation::TcbBelowMinimum {
                component: "snp",
                have: 8,
                min: 9
            })]
        );
        // A CRL that is not an AMD root's among the SNP collateral: a rejection naming it.
        let mut a = snp_input("virtee-milan-vcek");
        a.cert_files
            .push(vector("tdx/dcapqvl-v4-uptodate/root_ca_crl.der"));
        let v = snp("virtee-milan-vcek", &a);
        assert!(
            matches!(&v.reasons[..], [Reason::Check(why)]
                if why.contains("a CRL issued by \"Intel SGX Root CA\", which is not an AMD root")),
            "{:?}",
            v.reasons
        );
        assert_eq!(v.to_json()["verdict"], "rejected");
        // go-sev-guest's sample guest allows debugging (policy 0xb0000): rejected unless allowed.
        let v = snp("gosev-milan-vcek", &snp_input("gosev-milan-vcek"));
        assert_eq!(
            v.reasons,
            [Reason::DebugAllowed {
                snp_policy: Some(0xb0000)
            }]
        );
        assert_eq!(v.reason_texts(), ["guest policy 0xb0000 allows debugging"]);
        let allowed = AppraisalInput {
            allow_debug: true,
            ..snp_input("gosev-milan-vcek")
        };
        assert!(snp("gosev-milan-vcek", &allowed).accepted());

        let e = evidence_from_bytes(&vector("tdx/dcapqvl-v4-uptodate/quote.dat")).unwrap();
        let v = verify(
            &e,
            &AppraisalInput {
                at,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(v.reasons, [Reason::NoCollateral]);
        assert_eq!(v.tcb_status, TcbStatus::Unverified);
        let j = v.to_json();
        assert_eq!(j["rtmr0"], "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0");
        assert_eq!(j["mrseam"], "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/tdx/dcapqvl-v4-uptodate");
        let tdx = Some(Collateral::read(&dir).unwrap());
        let at = parse_rfc3339("2025-07-19T10:00:34Z").unwrap();
        let input = AppraisalInput {
            at,
            tdx,
            ..Default::default()
        };
        let v = verify(&e, &input).unwrap();
        assert!(v.accepted(), "{:?}", v.reasons);
        assert_eq!(v.tcb_status, TcbStatus::UpToDate);
        let j = v.to_json();
        assert_eq!(
            (&j["verdict"], &j["tcb_status"]),
            (&"ok".into(), &"UpToDate".into())
        );
        // A policy naming a TDX field is compared with the quote's value.
        let mrtd = j["mrtd"].as_str().unwrap().to_uppercase();
        for (allowed, accepted) in [(mrtd.as_str(), true), ("00", false)] {
            let policy = Policy::parse(&format!("[tdx]\nmrtd = [\"{allowed}\"]")).unwrap();
            let v = verify(
                &e,
                &AppraisalInput {
                    policy: Some(policy),
                    ..input.clone()
                },
            )
            .unwrap();
            assert_eq!(v.accepted(), accepted, "{:?}", v.reasons);
        }
        assert!(evidence_from_bytes(b"junk").is_err());
    }
}
