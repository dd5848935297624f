//! Any bytes as evidence: detection (TDX quote, SNP report, dev JSON), parsing, `inspect`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = cocoon_attest::appraisal::evidence_from_bytes(data) {
        let _ = cocoon_attest::appraisal::inspect(&e).map(|m| m.to_json());
        let _ = e.report_data();
    }
});
