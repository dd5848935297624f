//! The worker's side: open a sealed request with the HPKE key made inside the TEE, and seal the
//! answer to the request's reply key, bound to the request by the aad.

use crate::envelope::Sealed;
use crate::error::SealError;
use crate::plaintext::{RequestPlain, ResponsePlain};
use crate::suite::{parse_public, seal, HpkeKeyPair, PublicKey, REQUEST_INFO, RESPONSE_INFO};

/// An opened request.
pub struct OpenedRequest {
    /// Its plaintext (zeroized when dropped).
    pub request: RequestPlain,
    /// Where the answer is sealed to.
    pub reply_key: PublicKey,
    /// SHA-256 of its ciphertext: the response's aad and the receipt's `sealed.request_sha256`.
    pub request_sha256: [u8; 32],
}

/// Opens `sealed` with `key`. Whatever fails in the opening itself is [`SealError::NotOpened`];
/// a request that opens but is malformed names the field (never a value).
pub fn open_request(key: &HpkeKeyPair, sealed: &Sealed) -> Result<OpenedRequest, SealError> {
    let plaintext = key.open(&sealed.enc, REQUEST_INFO, b"", &sealed.ciphertext)?;
    let request = RequestPlain::parse(&plaintext)?;
    let reply_key = parse_public(&request.reply_key).map_err(|_| {
        SealError::malformed("sealed request", "`reply_key` is not a P-384 public key")
    })?;
    Ok(OpenedRequest {
        request,
        reply_key,
        request_sha256: sealed.ciphertext_sha256(),
    })
}

/// Seals `response` to the request's reply key, with aad = the request's ciphertext hash.
pub fn seal_response(
    reply_key: &PublicKey,
    request_sha256: &[u8; 32],
    response: &ResponsePlain,
) -> Result<Sealed, SealError> {
    let (enc, ciphertext) = seal(
        reply_key,
        RESPONSE_INFO,
        request_sha256,
        &response.to_bytes(),
    )?;
    Ok(Sealed { enc, ciphertext })
}
