//! Intel TDX quotes: parsing ([`quote`]), the PCK certificate's SGX extensions ([`pck`]), DCAP
//! collateral ([`collateral`]), its one-time checks ([`checked`]) and verification ([`verify`]).

pub mod checked;
pub mod collateral;
pub mod pck;
pub mod quote;
pub mod verify;
