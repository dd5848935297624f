//! The attestation crate's error type.

use std::path::PathBuf;

/// What can go wrong while producing or reading evidence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the kernel interface could not be used.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error (shown in the message, so not also a `source()`: a
        /// chain printer would show it twice).
        error: std::io::Error,
    },
    /// No TEE interface was found.
    #[error("no TEE evidence interface found (looked for {looked_for}); the insecure dev stand-in, or no evidence, must be chosen explicitly")]
    NoTee {
        /// What was looked for.
        looked_for: String,
    },
    /// NVIDIA GPU evidence could not be collected (NVML absent, no GPU, a GPU not in
    /// confidential-computing mode, an unreadable report or chain).
    #[error("GPU evidence: {0}")]
    GpuCollection(String),
    /// The configfs-tsm report entry changed under us.
    #[error("configfs-tsm: generation changed from {before} to {after} while reading the report (another writer raced us)")]
    GenerationChanged {
        /// Generation after our write.
        before: u64,
        /// Generation after our reads.
        after: u64,
    },
    /// The provider is not the one asked for, or not known.
    #[error("configfs-tsm: provider {found:?} ({why})")]
    Provider {
        /// The provider file's content.
        found: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// Evidence bytes are malformed.
    #[error("{platform} evidence: {message}")]
    Malformed {
        /// Platform of the evidence.
        platform: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The evidence asked for cannot be had here.
    #[error("{0}")]
    Selection(String),
    /// A signature does not verify.
    #[error("{0}")]
    BadSignature(String),
}

/// The attestation crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
