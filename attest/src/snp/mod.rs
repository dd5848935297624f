//! AMD SEV-SNP attestation reports: parsing ([`report`]), the AMD certificate chain ([`chain`])
//! and its revocation lists ([`crl`]), and verification ([`verify`]).

pub mod chain;
pub mod crl;
pub mod report;
pub mod verify;
