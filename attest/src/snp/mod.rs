//! AMD SEV-SNP attestation reports: parsing ([`report`]), the AMD certificate chain ([`chain`])
//! and verification ([`verify`]).

pub mod chain;
pub mod report;
pub mod verify;
