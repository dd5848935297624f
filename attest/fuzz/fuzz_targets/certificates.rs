//! Certificate input as `--collateral` and `auxblob` give it (PEM, DER, SEV certificate table):
//! parsing, the PCK's SGX extensions, AMD chain identification and the VCEK TCB extensions.
#![no_main]
use cocoon_attest::snp::chain::verify_chain;
use cocoon_attest::tdx::pck::pck_tcb;
use cocoon_attest::x509::parse_certs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = parse_certs(data) {
        for c in &certs {
            let _ = pck_tcb(c);
            let _ = c.check_validity(1_750_000_000);
        }
        let _ = verify_chain(&certs, 1_750_000_000);
    }
});
