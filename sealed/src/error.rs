//! Why sealing, opening or checking failed.

/// A sealing error. [`SealError::NotOpened`] says nothing more on purpose: a worker answers
/// every request that does not open alike.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The sealed message could not be opened (wrong key, changed bytes, wrong context).
    #[error("the sealed message could not be opened")]
    NotOpened,
    /// A sealed message or key document that is not well formed.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was read.
        what: &'static str,
        /// What is wrong with it (never a secret or plaintext value).
        why: String,
    },
    /// The worker's key failed its check: do not seal to it.
    #[error("the worker's key is not trusted: {0}")]
    Untrusted(String),
    /// The answer does not belong to this request.
    #[error("the answer does not belong to this request: {0}")]
    Mismatch(String),
    /// Encryption itself failed.
    #[error("sealing failed: {0}")]
    Seal(String),
}

impl SealError {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        SealError::Malformed {
            what,
            why: why.into(),
        }
    }
}
