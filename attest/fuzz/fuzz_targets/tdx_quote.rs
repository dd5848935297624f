//! A TDX quote: the quote parser, then the PCK chain it carries (PEM, X.509) and the PCK's SGX
//! extensions (our DER walker).
#![no_main]
use cocoon_attest::tdx::{pck::pck_tcb, quote::TdxQuote};
use cocoon_attest::x509::parse_certs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = TdxQuote::parse(data) {
        if let Ok(chain) = parse_certs(&q.pck_chain_pem) {
            if let Some(leaf) = chain.first() {
                let _ = pck_tcb(leaf);
            }
        }
    }
});
