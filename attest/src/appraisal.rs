//! Evidence as a whole: recognising raw bytes, reporting their fields (`attest inspect`) and
//! the verdict (`attest verify`) with the JSON fields docs/design.md §5 fixes: `platform`, `verdict`,
//! `reasons`, `report_data`, `tcb_status`, and per platform the measurements.
//!
//! Verdicts fail closed: `ok` needs every check this build performs to pass and a TCB status of
//! `UpToDate`; SNP guests and TDs that allow debugging are rejected unless allowed; TDX quotes
//! need DCAP collateral.

use serde_json::{json, Value};

use crate::dev::{DevEvidence, MAGIC};
use crate::error::{Error, Result};
use crate::evidence::{Evidence, Platform, SNP_REPORT_LEN};
use crate::policy::Policy;
use crate::snp::chain::{parse_certs, Roots};
use crate::snp::crl::parse_collateral;
use crate::snp::report::SnpReport;
use crate::snp::verify::verify_snp;
use crate::tdx::collateral::Collateral;
use crate::tdx::quote::TdxQuote;
use crate::tdx::verify::verify_tdx;

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
pub fn inspect(e: &Evidence) -> Result<Value> {
    Ok(match e.platform {
        Platform::Tdx => {
            let q = TdxQuote::parse(&e.quote)?;
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
        Platform::Snp => {
            let r = SnpReport::parse(&e.quote)?;
            json!({
                "platform": "snp", "version": r.version, "report_data": hex::encode(r.report_data),
                "measurement": hex::encode(r.measurement), "host_data": hex::encode(r.host_data),
                "policy": format!("{:#x}", r.policy), "debug": r.debug_allowed(), "vmpl": r.vmpl,
                "chip_id": hex::encode(r.chip_id), "reported_tcb": hex::encode(r.reported_tcb),
                "guest_svn": r.guest_svn, "signing_key": format!("{:?}", r.signing_key),
                "family_id": hex::encode(r.family_id), "image_id": hex::encode(r.image_id),
                "id_key_digest": hex::encode(r.id_key_digest),
                "author_key_digest": hex::encode(r.author_key_digest),
            })
        }
        Platform::Dev => {
            let d = DevEvidence::parse(&e.quote)?;
            json!({"platform": "dev", "report_data": hex::encode(d.report_data), "public_key": hex::encode(d.public_key),
                   "note": "insecure development evidence: it proves nothing"})
        }
    })
}

/// What verification may rely on besides the evidence.
#[derive(Clone, Debug, Default)]
pub struct Appraisal {
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

impl Appraisal {
    fn debug_allowed(&self) -> bool {
        self.allow_debug || self.policy.as_ref().is_some_and(|p| p.allow_debug)
    }
}

/// The verdict with the fields of `inspect`.
pub fn verify(e: &Evidence, a: &Appraisal) -> Result<Value> {
    let mut v = inspect(e)?;
    let mut reasons: Vec<String> = Vec::new();
    let tcb_status: Value = match e.platform {
        Platform::Snp => {
            let report = SnpReport::parse(&e.quote)?;
            let (mut certs, crls) = parse_collateral(&a.cert_files)?;
            if let Some(table) = &e.certs {
                certs.extend(parse_certs(table)?);
            }
            let verdict = verify_snp(&report, &certs, &crls, a.at, Roots::Amd);
            reasons.extend(verdict.reasons);
            v["amd_crl"] = if verdict.crl_checked {
                "checked"
            } else {
                "none given: revocation of the ASK and VCEK/VLEK not checked"
            }
            .into();
            if verdict.debug && !a.debug_allowed() {
                reasons.push(format!("guest policy {} allows debugging", verdict.policy));
            }
            v["product"] = verdict.product.into();
            if let Some(t) = verdict.reported_tcb {
                v["reported_tcb_decoded"] = serde_json::to_value(t).unwrap_or_default();
            }
            verdict.tcb_status.into()
        }
        Platform::Tdx => {
            let q = TdxQuote::parse(&e.quote)?;
            let status = match &a.tdx {
                None => {
                    reasons.push(
                        "no TDX collateral given (TCB info, QE identity, CRLs: --collateral)"
                            .into(),
                    );
                    "Unverified".to_owned()
                }
                Some(c) => {
                    let verdict = verify_tdx(&q, c, a.at);
                    reasons.extend(verdict.reasons);
                    v["fmspc"] = verdict.fmspc.into();
                    v["advisory_ids"] = verdict.advisory_ids.into();
                    verdict
                        .tcb_status
                        .unwrap_or_else(|| "NoMatchingTcbLevel".into())
                }
            };
            if q.report.debug() && !a.debug_allowed() {
                reasons.push("TD attributes have DEBUG set".into());
            }
            status.into()
        }
        Platform::Dev => {
            if !a.allow_dev {
                reasons.push("dev evidence proves nothing; allow it explicitly for testing".into());
            }
            "NotApplicable".into()
        }
    };
    if let Some(want) = a.report_data {
        if e.report_data()? != want {
            reasons.push("report data differs from the expected value".into());
        }
    }
    let status = tcb_status.as_str().unwrap_or("");
    let accepted = a
        .policy
        .as_ref()
        .map_or(status == "UpToDate", |p| p.accepts_status(status));
    if e.platform != Platform::Dev && !accepted && reasons.is_empty() {
        reasons.push(format!(
            "TCB status {status} is not accepted (without a policy only UpToDate is)"
        ));
    }
    v["tcb_status"] = tcb_status;
    match &a.policy {
        Some(p) => reasons.extend(p.violations(&v)),
        None => v["policy"] = "none: signatures, chains, collateral and an UpToDate TCB only; no measurement is checked".into(),
    }
    v["verdict"] = if reasons.is_empty() { "ok" } else { "rejected" }.into();
    v["reasons"] = reasons.into();
    Ok(v)
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
        source,
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
        let snp = |dir: &str, allow_debug| {
            let e = evidence_from_bytes(&vector(&format!("snp/{dir}/report.bin"))).unwrap();
            let a = Appraisal {
                cert_files: vec![
                    vector(&format!("snp/{dir}/vcek.der")),
                    vector(&format!("snp/{dir}/ask_ark.pem")),
                ],
                at,
                allow_debug,
                ..Default::default()
            };
            verify(&e, &a).unwrap()
        };
        let v = snp("virtee-milan-vcek", false);
        assert_eq!(
            (v["verdict"].as_str(), v["tcb_status"].as_str()),
            (Some("ok"), Some("UpToDate")),
            "{v}"
        );
        assert_eq!(v["measurement"], "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f");
        assert!(
            v["amd_crl"].as_str().unwrap().starts_with("none given"),
            "{v}"
        );
        // The SNP policy fields the docs name are reported, so a policy can name them.
        for f in [
            "family_id",
            "image_id",
            "id_key_digest",
            "author_key_digest",
        ] {
            assert!(v[f].as_str().is_some_and(|h| h.len() >= 32), "{f}: {v}");
        }
        let e = evidence_from_bytes(&vector("snp/virtee-milan-vcek/report.bin")).unwrap();
        let family = v["family_id"].as_str().unwrap().to_owned();
        let policy = Policy::parse(&format!("[snp]\nfamily_id = [\"{family}\"]")).unwrap();
        let a = Appraisal {
            cert_files: vec![
                vector("snp/virtee-milan-vcek/vcek.der"),
                vector("snp/virtee-milan-vcek/ask_ark.pem"),
            ],
            at,
            policy: Some(policy),
            ..Default::default()
        };
        assert_eq!(verify(&e, &a).unwrap()["verdict"], "ok");
        // A CRL that is not an AMD root's among the SNP collateral: a rejection naming it.
        let e = evidence_from_bytes(&vector("snp/virtee-milan-vcek/report.bin")).unwrap();
        let a = Appraisal {
            cert_files: vec![
                vector("snp/virtee-milan-vcek/vcek.der"),
                vector("snp/virtee-milan-vcek/ask_ark.pem"),
                vector("tdx/dcapqvl-v4-uptodate/root_ca_crl.der"),
            ],
            at,
            ..Default::default()
        };
        let v = verify(&e, &a).unwrap();
        assert_eq!(v["verdict"], "rejected");
        assert!(
            v["reasons"][0]
                .as_str()
                .unwrap()
                .contains("a CRL issued by \"Intel SGX Root CA\", which is not an AMD root"),
            "{v}"
        );
        // go-sev-guest's sample guest allows debugging (policy 0xb0000): rejected unless allowed.
        let v = snp("gosev-milan-vcek", false);
        assert_eq!(v["verdict"], "rejected");
        assert!(
            v["reasons"][0].as_str().unwrap().contains("debugging"),
            "{v}"
        );
        assert_eq!(snp("gosev-milan-vcek", true)["verdict"], "ok");

        let e = evidence_from_bytes(&vector("tdx/dcapqvl-v4-uptodate/quote.dat")).unwrap();
        let v = verify(
            &e,
            &Appraisal {
                at,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(v["verdict"], "rejected");
        assert_eq!(v["rtmr0"], "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0");
        assert_eq!(v["mrseam"], "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors/tdx/dcapqvl-v4-uptodate");
        let tdx = Some(Collateral::read(&dir).unwrap());
        let at = parse_rfc3339("2025-07-19T10:00:34Z").unwrap();
        let v = verify(
            &e,
            &Appraisal {
                at,
                tdx,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            (v["verdict"].as_str(), v["tcb_status"].as_str()),
            (Some("ok"), Some("UpToDate")),
            "{v}"
        );
        assert!(evidence_from_bytes(b"junk").is_err());
    }
}
