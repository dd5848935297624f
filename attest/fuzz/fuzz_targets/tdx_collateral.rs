//! DCAP collateral as a dcap-qvl JSON bundle: the bundle, the signed JSON bodies, the chains
//! and CRLs (`CheckedCollateral::check` parses them all), and the windows at a fixed time.
#![no_main]
use cocoon_attest::tdx::checked::CheckedCollateral;
use cocoon_attest::tdx::collateral::Collateral;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Collateral::from_bundle(data) {
        let _ = CheckedCollateral::check(&c).reasons_at(1_752_919_234);
    }
});
