//! The verdict on one GPU's evidence: a pure function of the evidence, the collateral, the
//! policy, the nonce expected and the time.
//!
//! `ok` needs: the report's signature by the device leaf, the device chain to the pinned
//! NVIDIA Device Identity CA, the leaf's FWID equal to the report's, the nonce (the
//! evidence's, and the expected one when given), a driver RIM and a VBIOS RIM for the
//! report's versions, signed and chained to the pinned RIM root and current at the time,
//! every active measurement equal to one of its RIM's alternatives, and good OCSP responses
//! for every device and RIM certificate but the roots and the device leaf (unless the policy
//! does not require them and none are given).

use serde::Serialize;

use super::chain::{leaf_fwid, verify_chain, Root};
use super::collateral::GpuCollateral;
use super::evidence::{Arch, GpuEvidence};
use super::rim::{Rim, RimKind};
use super::spdm::{field, GpuReport};
use crate::error::Result;
use crate::policy::GpuPolicy;
use crate::x509::{p384_key, parse_certs, Cert};

/// How the active measurements compared with the RIMs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MeasurementCount {
    /// Active golden measurements compared.
    pub checked: usize,
    /// Equal to one of their alternatives.
    pub matched: usize,
    /// RIM indices (from 0) that differ or that the report lacks.
    pub mismatched: Vec<u16>,
}

/// The verdict and what it was reached on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuVerdict {
    /// `nvgpu`.
    pub platform: &'static str,
    /// `ok` or `rejected`.
    pub verdict: &'static str,
    /// Why it was rejected (empty when ok).
    pub reasons: Vec<String>,
    /// `hopper` or `blackwell`.
    pub arch: Arch,
    /// The report's nonce, hex.
    pub nonce: String,
    /// The driver version the report states.
    pub driver_version: String,
    /// The VBIOS version the report states.
    pub vbios_version: String,
    /// The report's FWID, hex.
    pub fwid: String,
    /// The RIMs used, by NVIDIA's RIM ids.
    pub rims: Vec<String>,
    /// Measurements against the RIMs.
    pub measurements: MeasurementCount,
    /// `checked` or `not given`.
    pub ocsp: &'static str,
    /// The device leaf's common name.
    pub device: String,
}

/// NVIDIA's RIM id for the report's driver (`NV_GPU_DRIVER_GH100_550.90.07`).
pub fn driver_rim_id(product: &str, r: &GpuReport) -> String {
    format!("NV_GPU_DRIVER_{product}_{}", r.driver_version)
}

/// NVIDIA's RIM id for the report's VBIOS (`NV_GPU_VBIOS_1010_0200_882_96009F0001`).
pub fn vbios_rim_id(r: &GpuReport) -> String {
    let f = |t| r.ascii_field(t).unwrap_or_default();
    format!(
        "NV_GPU_VBIOS_{}_{}_{}_{}",
        f(field::PROJECT),
        f(field::PROJECT_SKU),
        f(field::CHIP_SKU),
        r.vbios_version.replace('.', "")
    )
}

/// The product name of an architecture in RIM ids.
fn product(arch: Arch) -> &'static str {
    match arch {
        Arch::Hopper => "GH100",
        Arch::Blackwell => "GB100",
    }
}

/// Verifies one GPU's evidence. `Err` only for evidence that cannot be parsed at all.
pub fn verify_gpu(
    e: &GpuEvidence,
    collateral: &GpuCollateral,
    policy: &GpuPolicy,
    expected_nonce: Option<[u8; 32]>,
    at: u64,
) -> Result<GpuVerdict> {
    let report = GpuReport::parse(&e.report_bytes()?)?;
    let certs = parse_certs(e.certificates.as_bytes())?;
    if certs.is_empty() {
        return Err(crate::error::Error::Malformed {
            platform: "nvgpu",
            message: "no device certificates".into(),
        });
    }
    let mut reasons = Vec::new();
    if e.arch != Arch::Hopper {
        reasons.push(format!(
            "{:?} evidence is not supported by this verifier (only Hopper's SPDM 1.1 reports are)",
            e.arch
        ));
    }
    if report.nonce != e.nonce_bytes()? {
        reasons.push("the report's nonce is not the evidence's nonce".into());
    }
    if let Some(want) = expected_nonce {
        if report.nonce != want {
            reasons.push(format!(
                "the report's nonce {} is not the expected {}",
                hex::encode(report.nonce),
                hex::encode(want)
            ));
        }
    }
    if let Err(e) = verify_chain("device chain", &certs, Root::Device, at, &collateral.memo) {
        reasons.push(e.to_string());
    }
    check_signature(&report, &certs[0], &mut reasons);
    match leaf_fwid(&certs[0]) {
        Ok(f) if f == report.fwid => {}
        Ok(f) => reasons.push(format!(
            "the device leaf's FWID {} is not the report's {}",
            hex::encode(f),
            hex::encode(&report.fwid)
        )),
        Err(e) => reasons.push(e.to_string()),
    }
    for (name, r) in &collateral.rims {
        if let Err(why) = r {
            reasons.push(format!("collateral {name}: {why}"));
        }
    }
    for (name, r) in &collateral.ocsp {
        if let Err(why) = r {
            reasons.push(format!("collateral {name}: {why}"));
        }
    }
    let driver = pick_rim(
        collateral,
        RimKind::Driver,
        &report.driver_version,
        &mut reasons,
    );
    let vbios = pick_rim(
        collateral,
        RimKind::Vbios,
        &report.vbios_version,
        &mut reasons,
    );
    if !policy.driver_versions.is_empty()
        && !policy.driver_versions.contains(&report.driver_version)
    {
        reasons.push(format!(
            "driver {} is not among the policy's driver_versions {:?}",
            report.driver_version, policy.driver_versions
        ));
    }
    if !policy.vbios_versions.is_empty()
        && !policy
            .vbios_versions
            .iter()
            .any(|v| v.eq_ignore_ascii_case(&report.vbios_version))
    {
        reasons.push(format!(
            "VBIOS {} is not among the policy's vbios_versions {:?}",
            report.vbios_version, policy.vbios_versions
        ));
    }
    let rims: Vec<&Rim> = driver.into_iter().chain(vbios).collect();
    for rim in &rims {
        if let Err(e) = rim.check_chain(at, &collateral.memo) {
            reasons.push(e.to_string());
        }
        if rim.product != product(e.arch) {
            reasons.push(format!(
                "the {} RIM {} is for product {:?}, the GPU is a {}",
                rim.kind.as_str(),
                rim.version,
                rim.product,
                product(e.arch)
            ));
        }
    }
    let measurements = compare(&report, &rims, &mut reasons);
    let ocsp = check_ocsp(&certs, &rims, collateral, policy, at, &mut reasons);
    let mut rim_ids = Vec::new();
    if driver.is_some() {
        rim_ids.push(driver_rim_id(product(e.arch), &report));
    }
    if vbios.is_some() {
        rim_ids.push(vbios_rim_id(&report));
    }
    Ok(GpuVerdict {
        platform: "nvgpu",
        verdict: if reasons.is_empty() { "ok" } else { "rejected" },
        reasons,
        arch: e.arch,
        nonce: hex::encode(report.nonce),
        driver_version: report.driver_version.clone(),
        vbios_version: report.vbios_version.clone(),
        fwid: hex::encode(&report.fwid),
        rims: rim_ids,
        measurements,
        ocsp,
        device: certs[0].common_name(),
    })
}

fn check_signature(report: &GpuReport, leaf: &Cert, reasons: &mut Vec<String>) {
    use p384::ecdsa::signature::Verifier;
    let ok = p384_key(leaf)
        .ok()
        .zip(p384::ecdsa::Signature::from_slice(&report.signature).ok());
    match ok {
        Some((key, sig)) if key.verify(&report.signed, &sig).is_ok() => {}
        Some(_) => reasons.push(format!(
            "the report's signature does not verify with the device leaf {:?}",
            leaf.common_name()
        )),
        None => reasons.push("the report's signature or the leaf's key is not P-384".into()),
    }
}

/// The RIM of `kind` for `version`; when there is none, a reason naming what was given.
fn pick_rim<'a>(
    c: &'a GpuCollateral,
    kind: RimKind,
    version: &str,
    reasons: &mut Vec<String>,
) -> Option<&'a Rim> {
    let good: Vec<&Rim> = c.rims.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let found = good
        .iter()
        .find(|r| r.kind == kind && r.version.eq_ignore_ascii_case(version))
        .copied();
    if found.is_none() {
        let given: Vec<String> = good
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.version.clone())
            .collect();
        reasons.push(format!(
            "no {} RIM for the report's {} {version} in the collateral (given: {})",
            kind.as_str(),
            kind.as_str(),
            if given.is_empty() {
                "none".into()
            } else {
                given.join(", ")
            }
        ));
    }
    found
}

/// Every active golden measurement against the report's block of the next index.
fn compare(report: &GpuReport, rims: &[&Rim], reasons: &mut Vec<String>) -> MeasurementCount {
    let mut count = MeasurementCount::default();
    let mut seen = std::collections::BTreeSet::new();
    for rim in rims {
        for g in rim.measurements.iter().filter(|g| g.active) {
            if !seen.insert(g.index) {
                reasons.push(format!(
                    "measurement {} is active in both the driver and the VBIOS RIM",
                    g.index
                ));
                continue;
            }
            count.checked += 1;
            let reported = u8::try_from(g.index + 1)
                .ok()
                .and_then(|i| report.measurement(i));
            if reported.is_some_and(|m| g.alternatives.contains(&m.value)) {
                count.matched += 1;
            } else {
                count.mismatched.push(g.index);
            }
        }
    }
    if !count.mismatched.is_empty() {
        reasons.push(format!(
            "{} of {} active measurements differ from the RIMs (indices {:?})",
            count.mismatched.len(),
            count.checked,
            count.mismatched
        ));
    }
    count
}

/// OCSP for the device chain less its leaf and root, and for each RIM's chain less its root.
fn check_ocsp(
    device: &[Cert],
    rims: &[&Rim],
    c: &GpuCollateral,
    policy: &GpuPolicy,
    at: u64,
    reasons: &mut Vec<String>,
) -> &'static str {
    let responses: Vec<_> = c.ocsp.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    if responses.is_empty() && c.ocsp.is_empty() {
        if policy.require_ocsp {
            reasons.push(
                "no OCSP responses given, and the policy requires them ([nvgpu] require_ocsp, default true)"
                    .into(),
            );
        }
        return "not given";
    }
    let mut pairs: Vec<(&Cert, &Cert)> = Vec::new();
    let chains = std::iter::once((device, 1)).chain(rims.iter().map(|r| (&r.certs[..], 0)));
    for (chain, skip) in chains {
        for w in chain.windows(2).skip(skip) {
            if !pairs.iter().any(|(s, _)| s.der == w[0].der) {
                pairs.push((&w[0], &w[1]));
            }
        }
    }
    for (subject, issuer) in pairs {
        match responses.iter().find(|r| r.covers(subject, issuer)) {
            Some(r) => {
                if let Err(e) = r.check(subject, issuer, at, policy.ocsp_max_age_s, &c.memo) {
                    reasons.push(e.to_string());
                }
            }
            None if policy.require_ocsp => reasons.push(format!(
                "no OCSP response for {:?} (serial {}) in the collateral",
                subject.common_name(),
                hex::encode(subject.serial())
            )),
            None => {}
        }
    }
    "checked"
}
