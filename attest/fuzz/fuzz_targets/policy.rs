//! A policy (TOML), applied to a fixed inspect-shaped verdict.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = cocoon_attest::policy::Policy::parse(text) {
        let tdx = serde_json::json!({
            "platform": "tdx", "tcb_status": "UpToDate", "mrtd": "00", "rtmr0": "11",
        });
        let snp = serde_json::json!({
            "platform": "snp", "tcb_status": "UpToDate", "measurement": "00",
            "reported_tcb_decoded": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
        });
        let _ = p.accepts_status("OutOfDate");
        let _ = p.violations(&tdx);
        let _ = p.violations(&snp);
    }
});
