//! A reference integrity manifest: XML parsing, canonicalisation and the XML signature.
#![no_main]
use cocoon_attest::nvgpu::rim::Rim;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Rim::parse(data) {
        let _ = r.check_chain(0, &Default::default());
    }
});
