//! Peers for `ci/gpu-check`'s timings: cuBLAS for the prefill GEMM and a device-to-device copy
//! for decode bandwidth, both on the same stream as our kernels.

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use crate::error::{shape, Result};
use crate::gpu::Gpu;
use crate::ops::DeviceWeight;
use crate::shapes::{self, WeightType};

impl Gpu {
    /// A cuBLAS handle on this device's stream; an error (not cudarc's panic) where
    /// `libcublas` cannot be loaded.
    pub fn cublas(&self) -> Result<CudaBlas> {
        // SAFETY: only tries to dlopen the library names cudarc knows; calls no symbol.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(shape(
                "cublas",
                "libcublas.so.13 is not on the loader path (LD_LIBRARY_PATH)",
            ));
        }
        Ok(CudaBlas::new(self.stream.clone())?)
    }

    /// `out[m, n] = x[m, k] · wᵀ` by cuBLAS (`cublasGemmEx`, BF16 inputs, F32 accumulation and
    /// output): the reference our tensor-core GEMM is timed against. `x` holds BF16 bits.
    pub fn cublas_gemm_bf16(
        &self,
        blas_handle: &CudaBlas,
        x: &CudaSlice<u16>,
        w: &DeviceWeight,
        m: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (n, k) = w.shape();
        shapes::matmul(x.len(), n, k, m, out.len())?;
        if w.dtype() != WeightType::BF16 {
            return Err(shape("cublas_gemm_bf16", "the weight is not BF16"));
        }
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (xp, _gx) = x.device_ptr(&self.stream);
        let (wp, _gw) = w.data().device_ptr(&self.stream);
        let (yp, _gy) = out.device_ptr_mut(&self.stream);
        // SAFETY: column-major view of the row-major product: Yᵀ[n, m] = op_T(W)[n, k] ·
        // Xᵀ[k, m]; W holds n·k (lda = k), X holds ≥ m·k (ldb = k), Y holds ≥ m·n (ldc = n),
        // all checked above; alpha/beta live across the call, which is enqueued on our stream.
        unsafe {
            blas::gemm_ex(
                *blas_handle.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha as *const f32).cast(),
                wp as *const _,
                blas_sys::cudaDataType::CUDA_R_16BF,
                k as i32,
                xp as *const _,
                blas_sys::cudaDataType::CUDA_R_16BF,
                k as i32,
                (&beta as *const f32).cast(),
                yp as *mut _,
                blas_sys::cudaDataType::CUDA_R_32F,
                n as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }?;
        Ok(())
    }

    /// Copies all of `src` into `dst` on the device (the bandwidth reference of decode).
    pub fn copy_device(&self, src: &CudaSlice<u8>, dst: &mut CudaSlice<u8>) -> Result<()> {
        if dst.len() < src.len() {
            return Err(shape(
                "copy_device",
                "destination is shorter than the source",
            ));
        }
        let mut view = dst.slice_mut(..src.len());
        Ok(self.stream.memcpy_dtod(src, &mut view)?)
    }
}
