//! NVIDIA GPU evidence: the SPDM GET_MEASUREMENTS request ‖ response parser, and the verdict on
//! the bytes as a report with the real device chain (no collateral).
#![no_main]
use cocoon_attest::nvgpu::evidence::{Arch, GpuEvidence};
use cocoon_attest::nvgpu::spdm::GpuReport;
use cocoon_attest::nvgpu::{verify_gpu, GpuCollateral};
use libfuzzer_sys::fuzz_target;

const CHAIN: &str = include_str!(
    "../../../tests/vectors/nvgpu/go-nvattest-tools-h100/test_gpu_attestation_certificate_chain.dat"
);

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = GpuReport::parse(data) {
        let e = GpuEvidence::new(Arch::Hopper, r.nonce, data, CHAIN.to_owned());
        let v = verify_gpu(&e, &GpuCollateral::default(), &Default::default(), None, 0);
        // Without RIMs nothing can be ok.
        assert!(v.map_or(true, |v| v.verdict == "rejected"));
    }
});
