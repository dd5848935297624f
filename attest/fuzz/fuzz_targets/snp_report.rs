//! An SEV-SNP attestation report: the report parser and its decoded fields.
#![no_main]
use cocoon_attest::snp::report::SnpReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SnpReport::parse(data) {
        let _ = r.debug_allowed();
    }
});
