//! A policy (TOML), applied to the parsed fields of a real TDX quote and SNP report.
#![no_main]
use cocoon_attest::appraisal::evidence_from_bytes;
use cocoon_attest::{Measurements, TcbStatus};
use libfuzzer_sys::fuzz_target;

fn measured(bytes: &[u8]) -> Measurements {
    Measurements::parse(&evidence_from_bytes(bytes).unwrap()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = cocoon_attest::policy::Policy::parse(text) {
        let tdx = measured(include_bytes!("../../../tests/vectors/tdx/dcapqvl-v4-uptodate/quote.dat"));
        let snp = measured(include_bytes!("../../../tests/vectors/snp/virtee-milan-vcek/report.bin"));
        let _ = p.accepts_status(&TcbStatus::OutOfDate);
        let _ = p.violations(&tdx, None);
        let _ = p.violations(&snp, Some(&Default::default()));
    }
});
