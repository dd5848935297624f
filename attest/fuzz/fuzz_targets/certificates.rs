//! Certificate input as `--collateral` and `auxblob` give it (PEM, DER, SEV certificate table,
//! AMD CRLs): parsing, the PCK's SGX extensions, AMD chain identification, the VCEK TCB
//! extensions, and CRL checks against every certificate offered as an issuer.
#![no_main]
use cocoon_attest::snp::chain::{verify_chain, Roots};
use cocoon_attest::snp::crl::{check, parse_collateral};
use cocoon_attest::tdx::pck::pck_tcb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((certs, crls)) = parse_collateral(&[data.to_vec()]) {
        for c in &certs {
            let _ = pck_tcb(c);
            let _ = c.check_validity(1_750_000_000);
            for crl in &crls {
                let _ = check(crl, c, 1_750_000_000);
                let _ = crl.lists(c);
            }
        }
        let _ = verify_chain(&certs, &crls, 1_750_000_000, Roots::Amd);
    }
});
