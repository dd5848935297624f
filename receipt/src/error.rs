//! The receipt crate's error type: what makes a receipt, a binding or a GPU nonce impossible
//! to read or compute (a verdict on a well-formed receipt is a `VerifyReport`, not an error).

/// Why a receipt could not be read, or a binding not computed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The receipt is larger than any receipt may be.
    #[error("malformed receipt: {size} bytes, more than the {limit} a receipt may have")]
    TooLarge {
        /// Its size in bytes.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Not a receipt: malformed JSON, a wrong type, an unknown field.
    #[error("malformed receipt: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A receipt version this verifier does not know.
    #[error("unsupported receipt version {0} (this verifier knows 1)")]
    Version(u64),
    /// A receipt's evidence names a platform this verifier does not know.
    #[error("unknown evidence platform {0:?}")]
    UnknownPlatform(String),
    /// A receipt's evidence has no quote.
    #[error("evidence has no quote")]
    NoQuote,
    /// A receipt's evidence field is not base64.
    #[error("evidence {field} is not base64: {source}")]
    NotBase64 {
        /// `quote` or `certs`.
        field: &'static str,
        /// The decoder's complaint.
        source: base64::DecodeError,
    },
    /// A value that RFC 8785 cannot canonicalize exactly (an integer beyond 2^53, a float).
    #[error(transparent)]
    Canonical(#[from] crate::jcs::JcsError),
    /// GPU evidence whose report cannot be read (for the key binding).
    #[error(transparent)]
    Evidence(#[from] cocoon_attest::Error),
}

/// The receipt crate's result.
pub type Result<T> = std::result::Result<T, Error>;
