//! NVIDIA GPU evidence against the real vectors (tests/vectors/nvgpu, PROVENANCE.md there): the
//! complete go-nvattest-tools set is ok; NVIDIA's sample with the RIMs of another driver and
//! VBIOS is rejected by name; tampering anywhere is rejected.

#![allow(clippy::unwrap_used)] // test code reports a broken setup by panicking

use std::path::{Path, PathBuf};

use cocoon_attest::appraisal::parse_rfc3339;
use cocoon_attest::nvgpu::evidence::{Arch, GpuEvidence};
use cocoon_attest::nvgpu::ocsp::Ocsp;
use cocoon_attest::nvgpu::{verify_gpu, GpuCollateral};
use cocoon_attest::policy::GpuPolicy;
use cocoon_attest::x509::parse_certs;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors/nvgpu")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir(name)).unwrap()
}

const SET: &str = "go-nvattest-tools-h100";
const NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

fn evidence() -> GpuEvidence {
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(NONCE, &mut nonce).unwrap();
    GpuEvidence::new(
        Arch::Hopper,
        nonce,
        &read(&format!("{SET}/test_raw_gpu_attestation_report.dat")),
        String::from_utf8(read(&format!(
            "{SET}/test_gpu_attestation_certificate_chain.dat"
        )))
        .unwrap(),
    )
}

/// The set's RIMs and OCSP responses as collateral files.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut f = vec![
        (
            "driver.xml".to_owned(),
            read(&format!("{SET}/NV_GPU_DRIVER_GH100_550.90.07.xml")),
        ),
        (
            "vbios.xml".to_owned(),
            read(&format!("{SET}/NV_GPU_VBIOS_1010_0200_882_96009F0001.xml")),
        ),
    ];
    let mut names: Vec<_> = std::fs::read_dir(dir(&format!("{SET}/ocsp")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        f.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read(p).unwrap(),
        ));
    }
    f
}

fn at() -> u64 {
    parse_rfc3339("2025-10-24T12:00:00Z").unwrap()
}

#[test]
fn the_complete_set_is_ok() {
    let c = GpuCollateral::from_files(files());
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(NONCE, &mut nonce).unwrap();
    let v = verify_gpu(&evidence(), &c, &GpuPolicy::default(), Some(nonce), at()).unwrap();
    assert_eq!(v.verdict, "ok", "{:?}", v.reasons);
    assert_eq!((v.measurements.checked, v.measurements.matched), (33, 33));
    assert_eq!(v.ocsp, "checked");
    assert_eq!(
        v.rims,
        [
            "NV_GPU_DRIVER_GH100_550.90.07",
            "NV_GPU_VBIOS_1010_0200_882_96009F0001"
        ]
    );
    assert_eq!(
        (v.driver_version.as_str(), v.vbios_version.as_str()),
        ("550.90.07", "96.00.9F.00.01")
    );

    // Another nonce expected; another time (the driver RIM signer expired on 2026-06-01);
    // no OCSP responses while the default policy requires them.
    let v = verify_gpu(&evidence(), &c, &GpuPolicy::default(), Some([7; 32]), at()).unwrap();
    assert!(
        v.reasons.iter().any(|r| r.contains("is not the expected")),
        "{:?}",
        v.reasons
    );
    let later = parse_rfc3339("2026-07-01T00:00:00Z").unwrap();
    let v = verify_gpu(&evidence(), &c, &GpuPolicy::default(), None, later).unwrap();
    assert!(
        v.reasons
            .iter()
            .any(|r| r.contains("HCC RIM L4 Signer") && r.contains("not valid")),
        "{:?}",
        v.reasons
    );
    let rims_only = GpuCollateral::from_files(files().into_iter().take(2).collect());
    let v = verify_gpu(&evidence(), &rims_only, &GpuPolicy::default(), None, at()).unwrap();
    assert_eq!((v.verdict, v.ocsp), ("rejected", "not given"));
    assert!(v.reasons[0].contains("require_ocsp"), "{:?}", v.reasons);
    let lenient = GpuPolicy {
        require_ocsp: false,
        ..Default::default()
    };
    let v = verify_gpu(&evidence(), &rims_only, &lenient, None, at()).unwrap();
    assert_eq!(v.verdict, "ok", "{:?}", v.reasons);
    // A response more than the allowed age before the check: the device responses are from
    // 2025-08-21, 64 days before.
    let strict = GpuPolicy {
        ocsp_max_age_s: 30 * 86400,
        ..Default::default()
    };
    let v = verify_gpu(&evidence(), &c, &strict, None, at()).unwrap();
    assert_eq!(v.reasons.len(), 3, "{:?}", v.reasons);
    assert!(v
        .reasons
        .iter()
        .all(|r| r.contains("more than the allowed")));
    // Driver and VBIOS versions the policy does not allow.
    let pinned = GpuPolicy {
        driver_versions: vec!["560.35.03".into()],
        vbios_versions: vec!["96.00.9f.00.01".into()],
        ..Default::default()
    };
    let v = verify_gpu(&evidence(), &c, &pinned, None, at()).unwrap();
    assert_eq!(v.reasons.len(), 1, "{:?}", v.reasons);
    assert!(v.reasons[0].contains("driver 550.90.07 is not among"));
    // The same report called Blackwell: not supported, and the RIMs are for another product.
    let mut other = evidence();
    other.arch = Arch::Blackwell;
    let v = verify_gpu(&other, &c, &GpuPolicy::default(), None, at()).unwrap();
    assert!(
        v.reasons[0].contains("Blackwell evidence is not supported"),
        "{:?}",
        v.reasons
    );
    assert!(
        v.reasons
            .iter()
            .any(|r| r.contains("is for product \"GH100\", the GPU is a GB100")),
        "{:?}",
        v.reasons
    );
}

#[test]
fn nvidias_sample_with_the_rims_of_another_driver_is_rejected_by_name() {
    let d = "nvtrust-hopper-sample";
    let hex_report = String::from_utf8(read(&format!("{d}/hopperAttestationReport.txt"))).unwrap();
    let report = hex::decode(hex_report.trim()).unwrap();
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(NONCE, &mut nonce).unwrap();
    let e = GpuEvidence::new(
        Arch::Hopper,
        nonce,
        &report,
        String::from_utf8(read(&format!("{d}/hopperCertChain.txt"))).unwrap(),
    );
    let c = GpuCollateral::from_files(vec![
        (
            "d.swidtag".into(),
            read(&format!("{d}/Driver_RIM_test_no_gpu.swidtag")),
        ),
        (
            "v.swidtag".into(),
            read(&format!("{d}/1010_0200_882_96005E0001_test_no_gpu.swidtag")),
        ),
    ]);
    let lenient = GpuPolicy {
        require_ocsp: false,
        ..Default::default()
    };
    let v = verify_gpu(&e, &c, &lenient, Some(nonce), at()).unwrap();
    assert_eq!(v.verdict, "rejected");
    assert_eq!(v.reasons.len(), 2, "{:?}", v.reasons);
    assert!(
        v.reasons[0].contains("driver 550.90.07") && v.reasons[0].contains("545.00"),
        "{:?}",
        v.reasons
    );
    assert!(
        v.reasons[1].contains("vbios 96.00.9F.00.01") && v.reasons[1].contains("96.00.5E.00.01"),
        "{:?}",
        v.reasons
    );
    // With the matching RIMs it is the same valid report.
    let v = verify_gpu(
        &e,
        &GpuCollateral::from_files(files()),
        &GpuPolicy::default(),
        Some(nonce),
        at(),
    )
    .unwrap();
    assert_eq!(v.verdict, "ok", "{:?}", v.reasons);
}

#[test]
fn a_collateral_directory_reads_its_subdirectory() {
    let c = GpuCollateral::read(&dir(SET)).unwrap();
    // RIMs and the ocsp/ folder are read; the other files of the vector folder are not OCSP
    // responses and are named as such.
    assert_eq!(c.rims.iter().filter(|(_, r)| r.is_ok()).count(), 2);
    assert_eq!(c.ocsp.iter().filter(|(_, r)| r.is_ok()).count(), 7);
    assert!(c.ocsp.iter().any(|(n, r)| n == "LICENSE" && r.is_err()));
}

#[test]
fn ocsp_requests_name_the_certificates_the_responses_answer_for() {
    // The request side of `cocoon collateral`: for each certificate with a response in the
    // set, the request's CertID is byte-identical to the one the responder answered.
    let chain = parse_certs(&read(&format!(
        "{SET}/test_gpu_attestation_certificate_chain.dat"
    )))
    .unwrap();
    let responses: Vec<Ocsp> = files()
        .into_iter()
        .skip(2)
        .map(|(_, b)| Ocsp::parse(&b).unwrap())
        .collect();
    for i in 1..4 {
        let req = cocoon_attest::nvgpu::ocsp::request(&chain[i], &chain[i + 1]).unwrap();
        let answered = responses
            .iter()
            .flat_map(|r| r.basic.tbs_response_data.responses.iter())
            .map(|s| x509_cert::der::Encode::to_der(&s.cert_id).unwrap())
            .any(|id| req.windows(id.len()).any(|w| w == id.as_slice()));
        assert!(answered, "certificate {i}");
        assert!(responses.iter().any(|r| r.covers(&chain[i], &chain[i + 1])));
    }
}

/// A small deterministic generator (xorshift64*), so that a failure names a reproducible flip.
struct Flips(u64);

impl Flips {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as usize % below
    }
    fn flip(&mut self, bytes: &[u8]) -> (Vec<u8>, usize) {
        let mut b = bytes.to_vec();
        let bit = self.next(b.len() * 8);
        b[bit / 8] ^= 1 << (bit % 8);
        (b, bit)
    }
}

fn pem(ders: &[Vec<u8>]) -> String {
    use base64::Engine;
    ders.iter()
        .map(|d| {
            let b = base64::engine::general_purpose::STANDARD.encode(d);
            let lines: Vec<&str> = b
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
        .collect()
}

#[test]
fn no_bit_flip_is_accepted() {
    const PER_TARGET: usize = 2000;
    let mut rng = Flips(0x9e37_79b9_7f4a_7c15);
    let at = at();
    let policy = GpuPolicy::default();
    let good = GpuCollateral::from_files(files());
    let base = evidence();
    assert_eq!(
        verify_gpu(&base, &good, &policy, None, at).unwrap().verdict,
        "ok"
    );
    let accepted = |e: &GpuEvidence, c: &GpuCollateral| {
        verify_gpu(e, c, &policy, None, at).is_ok_and(|v| v.verdict == "ok")
    };
    let mut checked = 0;
    // The report: every byte is signed or is the signature.
    let report = base.report_bytes().unwrap();
    for _ in 0..PER_TARGET {
        let (r, bit) = rng.flip(&report);
        let e = GpuEvidence::new(
            Arch::Hopper,
            base.nonce_bytes().unwrap(),
            &r,
            base.certificates.clone(),
        );
        assert!(!accepted(&e, &good), "report bit {bit}");
        checked += 1;
    }
    // The device chain, one certificate's DER at a time.
    let chain: Vec<Vec<u8>> = parse_certs(base.certificates.as_bytes())
        .unwrap()
        .into_iter()
        .map(|c| c.der)
        .collect();
    for i in 0..PER_TARGET {
        let which = i % chain.len();
        let mut certs = chain.clone();
        let (flipped, bit) = rng.flip(&chain[which]);
        certs[which] = flipped;
        let mut e = base.clone();
        e.certificates = pem(&certs);
        assert!(!accepted(&e, &good), "certificate {which} bit {bit}");
        checked += 1;
    }
    // Each RIM and each OCSP response (as DER).
    let all = files();
    for (k, (name, bytes)) in all.iter().enumerate() {
        let der = if k < 2 {
            bytes.clone()
        } else {
            use base64::Engine;
            let text: Vec<u8> = bytes
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap()
        };
        let n = if k < 2 { PER_TARGET } else { PER_TARGET / 4 };
        for _ in 0..n {
            let (flipped, bit) = rng.flip(&der);
            // The good collateral (its memo of verified signatures included) with this one
            // file replaced.
            let mut c = good.clone();
            let one = GpuCollateral::from_files(vec![(name.clone(), flipped)]);
            if k < 2 {
                c.rims[k] = one.rims.into_iter().next().unwrap();
            } else {
                c.ocsp[k - 2] = one.ocsp.into_iter().next().unwrap();
            }
            assert!(!accepted(&base, &c), "{name} bit {bit}");
            checked += 1;
        }
    }
    assert!(checked >= 4 * PER_TARGET + 7 * PER_TARGET / 4);
    eprintln!("{checked} bit flips, none accepted");
}

#[test]
fn the_collateral_plan_asks_for_exactly_what_the_set_holds() {
    let c = GpuCollateral::from_files(files().into_iter().take(2).collect());
    let p = cocoon_attest::nvgpu::plan::plan(&evidence(), &c).unwrap();
    // The RIM ids are the names the set's RIM files carry.
    assert_eq!(
        p.rims,
        [
            "NV_GPU_DRIVER_GH100_550.90.07",
            "NV_GPU_VBIOS_1010_0200_882_96009F0001"
        ]
    );
    // Three device certificates, three of the driver RIM's chain, the VBIOS RIM's signer: each
    // request answered by one of the seven captured responses, byte for byte in its CertID.
    assert_eq!(p.ocsp.len(), 7);
    let responses: Vec<Ocsp> = files()
        .into_iter()
        .skip(2)
        .map(|(_, b)| Ocsp::parse(&b).unwrap())
        .collect();
    for f in &p.ocsp {
        assert!(f.url.starts_with("http"), "{}", f.url);
        let answered = responses
            .iter()
            .flat_map(|r| r.basic.tbs_response_data.responses.iter())
            .map(|s| x509_cert::der::Encode::to_der(&s.cert_id).unwrap())
            .any(|id| f.request.windows(id.len()).any(|w| w == id.as_slice()));
        assert!(answered, "{} {}", f.subject, f.serial);
    }
    // Without RIMs yet, only the device chain's three.
    let p = cocoon_attest::nvgpu::plan::plan(&evidence(), &GpuCollateral::default()).unwrap();
    assert_eq!(p.ocsp.len(), 3);
}
