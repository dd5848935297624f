//! Errors of the kernel crate.

use std::path::PathBuf;

/// Why a kernel could not be compiled, loaded or launched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CUDA driver library (`libcuda.so`) could not be loaded.
    #[error("no CUDA driver: libcuda could not be loaded ({0})")]
    NoDriver(String),
    /// The NVRTC library could not be loaded.
    #[error("NVRTC is not available: libnvrtc could not be loaded (put CUDA 13's libnvrtc.so.13 on LD_LIBRARY_PATH)")]
    NoNvrtc,
    /// The requested device does not exist.
    #[error("no CUDA device {ordinal}: {count} device(s) found")]
    NoDevice {
        /// The device asked for.
        ordinal: usize,
        /// Devices present.
        count: usize,
    },
    /// The device is older than the kernels need (tensor-core `mma.sync` with BF16: sm_80).
    #[error(
        "CUDA device of compute capability {major}.{minor} is not supported (8.0 or newer is)"
    )]
    UnsupportedDevice {
        /// Major compute capability.
        major: u32,
        /// Minor compute capability.
        minor: u32,
    },
    /// NVRTC rejected a source.
    #[error("NVRTC could not compile {file} for {arch}: {log}")]
    Compile {
        /// The source file.
        file: &'static str,
        /// The target, `sm_XY`.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// The check of the wgmma GEMM at open hit a CUDA error (which may have spoiled the
    /// context, so the device is not used).
    #[error("the check of the wgmma GEMM at open failed: {0} (COCOON_CUDA_WGMMA=0 opens the device without it)")]
    WgmmaCheck(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// A cuBLAS call failed.
    #[error("cuBLAS: {0}")]
    Cublas(#[from] cudarc::cublas::result::CublasError),
    /// A kernel was called with shapes that do not fit its buffers or limits.
    #[error("{kernel}: {problem}")]
    Shape {
        /// The kernel.
        kernel: &'static str,
        /// What does not fit.
        problem: String,
    },
    /// The on-disk kernel cache could not be written.
    #[error("kernel cache {path}: {error}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error (in the message, so not also a `source()`).
        error: std::io::Error,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A shape error for `kernel`.
pub(crate) fn shape(kernel: &'static str, problem: impl Into<String>) -> Error {
    Error::Shape {
        kernel,
        problem: problem.into(),
    }
}
