//! Intel TDX quotes: parsing ([`quote`]), the PCK certificate's SGX extensions ([`pck`]), DCAP
//! collateral ([`collateral`]) and verification ([`verify`]).

pub mod collateral;
pub mod pck;
pub mod quote;
pub mod verify;
