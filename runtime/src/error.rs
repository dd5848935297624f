//! The runtime's error type: one variant per thing that can be wrong, each naming it.

use std::path::PathBuf;

/// Everything that can go wrong while pinning, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or opening a file or directory failed.
    #[error("{}: {error}", crate::escape::path(path))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error (shown in the message, so not also a `source()`: a
        /// chain printer would show it twice).
        error: std::io::Error,
    },
    /// A pin given by the user is not 64 hexadecimal characters.
    #[error("malformed pin {0:?}: expected 64 hexadecimal characters (a SHA-256)")]
    MalformedPin(String),
    /// One pinned file's bytes differ from the trusted manifest.
    #[error(
        "pin mismatch in {}: expected sha256 {expected}, actual {actual}",
        crate::escape::shown(file)
    )]
    PinMismatch {
        /// Path of the file relative to the model directory.
        file: String,
        /// Hash the trusted manifest lists.
        expected: String,
        /// Hash of the bytes read.
        actual: String,
    },
    /// The set of files hashes to another pin and no trusted manifest says which file changed.
    #[error("pin mismatch: expected {expected}, the files in {} pin to {actual}; the files hashed:\n{manifest}(keep the pinned manifest as {} in the directory to have the changed file named)", dir.display(), crate::pin::MANIFEST_FILE)]
    ModelPinMismatch {
        /// The model directory.
        dir: PathBuf,
        /// The pin asked for.
        expected: String,
        /// The pin of the files found.
        actual: String,
        /// The manifest text of the files found.
        manifest: String,
    },
    /// A path that a pin can not name unambiguously, or that leaves the model directory.
    #[error("{}: refused: {reason}", crate::escape::path(path))]
    RefusedPath {
        /// The offending path.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file the loader needs is absent.
    #[error("{}: missing ({why})", crate::escape::path(path))]
    MissingFile {
        /// The absent file.
        path: PathBuf,
        /// Why the loader needs it.
        why: String,
    },
    /// A model file is present but its content is malformed or unsupported.
    #[error("{}: {message}", crate::escape::shown(file))]
    ModelFormat {
        /// The file, relative to the model directory.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// A request that the model or runtime cannot honour (bad parameters, too long prompt…).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Evidence could not be produced.
    #[error("attestation: {0}")]
    Attestation(#[from] cocoon_attest::Error),
    /// A receipt or key binding could not be computed (a value RFC 8785 cannot canonicalize).
    #[error("receipt: {0}")]
    Receipt(#[from] cocoon_receipt::Error),
    /// A sealed request or the worker's HPKE key failed (never says why a request did not
    /// open: [`cocoon_sealed::SealError::NotOpened`]).
    #[error("sealed request: {0}")]
    Sealing(#[from] cocoon_sealed::SealError),
    /// A backend is unavailable or failed.
    #[error("backend: {0}")]
    Backend(String),
}

impl Error {
    /// A [`Error::ModelFormat`] for `file`.
    pub fn format(file: impl Into<String>, message: impl Into<String>) -> Self {
        Error::ModelFormat {
            file: file.into(),
            message: message.into(),
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
