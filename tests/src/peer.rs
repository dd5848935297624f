//! The independent verifiers the attestation results are compared with: Phala's `dcap-qvl` for
//! TDX and virtee's `sev` for SNP, fed the same vector files as ours.

use std::path::{Path, PathBuf};

pub use dcap_qvl;
pub use sev;

use sev::certs::snp::{ca, Certificate, Chain};

/// `tests/vectors`: the real evidence and collateral the tests use (README, MANIFEST there).
pub fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// dcap-qvl's collateral from a vector folder's PCS files (`tcb_info.json`, `qe_identity.json`,
/// the issuer chains and both CRLs): the signed JSON is passed as the exact bytes Intel signed.
pub fn dcap_collateral(dir: &Path) -> dcap_qvl::QuoteCollateralV3 {
    let text = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let signed = |f: &str, key: &str| {
        let all: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text(f)).unwrap();
        let raw: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(&text(f)).unwrap();
        let sig = hex::decode(all["signature"].as_str().unwrap()).unwrap();
        (raw[key].get().to_owned(), sig)
    };
    let (tcb_info, tcb_info_signature) = signed("tcb_info.json", "tcbInfo");
    let (qe_identity, qe_identity_signature) = signed("qe_identity.json", "enclaveIdentity");
    dcap_qvl::QuoteCollateralV3 {
        pck_crl_issuer_chain: text("pck_crl_issuer_chain.pem"),
        root_ca_crl: std::fs::read(dir.join("root_ca_crl.der")).unwrap(),
        pck_crl: std::fs::read(dir.join("pck_crl.der")).unwrap(),
        tcb_info_issuer_chain: text("tcb_info_issuer_chain.pem"),
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain: text("qe_identity_issuer_chain.pem"),
        qe_identity,
        qe_identity_signature,
        pck_certificate_chain: None,
    }
}

/// The `sev` crate's chain from a vector folder: `vcek.der` and `ask_ark.pem` (ASK, then ARK).
pub fn sev_chain(dir: &Path) -> Chain {
    let pem = std::fs::read_to_string(dir.join("ask_ark.pem")).unwrap();
    const END: &str = "-----END CERTIFICATE-----";
    let blocks: Vec<String> = pem
        .split_inclusive(END)
        .filter(|b| b.contains(END))
        .map(|b| b.trim_start().to_owned())
        .collect();
    assert_eq!(blocks.len(), 2, "ask_ark.pem holds the ASK and the ARK");
    Chain {
        ca: ca::Chain {
            ask: Certificate::from_pem(blocks[0].as_bytes()).unwrap(),
            ark: Certificate::from_pem(blocks[1].as_bytes()).unwrap(),
        },
        vek: Certificate::from_der(&std::fs::read(dir.join("vcek.der")).unwrap()).unwrap(),
    }
}
