//! Intel TDX quotes: parsing ([`quote`]). Verification against Intel's DCAP collateral is not
//! written yet: callers report TDX evidence as unverified.

pub mod quote;
