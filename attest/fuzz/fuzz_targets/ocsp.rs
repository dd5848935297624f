//! An OCSP response (DER or base64), checked for each certificate of the real device chain.
#![no_main]
use cocoon_attest::nvgpu::ocsp::Ocsp;
use cocoon_attest::x509::parse_certs;
use libfuzzer_sys::fuzz_target;

const CHAIN: &str = include_str!(
    "../../../tests/vectors/nvgpu/go-nvattest-tools-h100/test_gpu_attestation_certificate_chain.dat"
);

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Ocsp::parse(data) else { return };
    let certs = parse_certs(CHAIN.as_bytes()).expect("the vector chain parses");
    for w in certs.windows(2) {
        let _ = r.check(&w[0], &w[1], 1_760_000_000, u64::MAX, &Default::default());
    }
});
