//! A runtime on whichever backend was chosen at run time ([`Opened`]), and that choice
//! ([`BackendChoice`]): shared by the CLI's `--backend` and the C API's `backend` option.

use std::path::Path;

use crate::backend::cpu::{CpuBackend, Products};
use crate::backend::cuda::CudaBackend;
use crate::error::Result;
use crate::model::CheckedModel;
use crate::pin::Pin;
use crate::pinned::ProgressFn;
use crate::runtime::Runtime;

/// Where to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// CUDA when a driver and the device are usable, else the CPU (with a warning).
    Auto,
    /// The CPU backend.
    Cpu,
    /// The CPU backend with BF16 products (`cpu:avx512bf16`, [`Products::Bf16`]): faster on
    /// BF16 weights where the CPU has AVX512-BF16, other bits than `cpu`; emulated (slowly)
    /// elsewhere, to replay its receipts.
    CpuBf16,
    /// The CUDA backend; an error where it cannot run.
    Cuda,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cpu:avx512bf16" => Ok(BackendChoice::CpuBf16),
            "cuda" => Ok(BackendChoice::Cuda),
            other => Err(format!(
                "{other:?} is not auto, cpu, cpu:avx512bf16 or cuda"
            )),
        }
    }
}

/// A runtime on the backend that was chosen.
// One per opened model, alive as long as it: the size difference of the variants (the CUDA
// device handle's kernel table) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    /// On the CPU.
    Cpu(Runtime<CpuBackend>),
    /// On a CUDA device.
    Cuda(Runtime<CudaBackend>),
}

/// Runs `$body` with `$rt` bound to the [`Opened`] runtime, whichever its backend.
#[macro_export]
macro_rules! with_runtime {
    ($opened:expr, |$rt:ident| $body:expr) => {
        match $opened {
            $crate::opened::Opened::Cpu($rt) => $body,
            $crate::opened::Opened::Cuda($rt) => $body,
        }
    };
}

impl Opened {
    /// Opens `dir` against `pin` on the chosen backend: `device` is the CUDA ordinal, `threads`
    /// the CPU threads (0: all cores). The device is tried before the files are hashed, so a
    /// `Cuda` choice that cannot run fails fast; `Auto` falls back to the CPU.
    pub fn open(
        dir: &Path,
        pin: &Pin,
        choice: BackendChoice,
        device: usize,
        threads: usize,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Opened> {
        let cuda = match choice {
            BackendChoice::Cpu | BackendChoice::CpuBf16 => None,
            BackendChoice::Cuda => Some(CudaBackend::new(device)?),
            BackendChoice::Auto if cocoon_kernels::gpu::driver_present() => {
                match CudaBackend::new(device) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::warn!("backend auto: using the CPU: {e}");
                        None
                    }
                }
            }
            BackendChoice::Auto => None,
        };
        let checked = CheckedModel::open(dir, pin, progress)?;
        Ok(match cuda {
            Some(b) => Opened::Cuda(Runtime::new(checked, b)?),
            None => {
                let products = match choice {
                    BackendChoice::CpuBf16 => Products::Bf16,
                    _ => Products::F32,
                };
                let cpu = CpuBackend::new(threads)?.with_products(products);
                Opened::Cpu(Runtime::new(checked, cpu)?)
            }
        })
    }
}
