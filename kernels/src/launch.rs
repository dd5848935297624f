//! Kernel launches through `cuLaunchKernelEx`, so that a launch can carry the
//! programmatic-serialization attribute (programmatic dependent launch, sm_90+): the kernel may
//! start while the previous kernel on the stream is still running. Every kernel here begins
//! with `stream_order()` (common.cuh), which lets the next kernel start launching and then waits
//! for the previous one to finish with its writes visible, so stream order holds for memory;
//! the GEMVs ask L2 for their weights (which no kernel writes) between the two halves, so that
//! memory streams them while the previous kernel finishes. Results are identical with the
//! attribute on or off.

use std::ffi::c_void;

use cudarc::driver::sys::{
    CUlaunchAttribute, CUlaunchAttributeID, CUlaunchAttributeValue, CUlaunchConfig,
};
use cudarc::driver::{
    sys, CudaFunction, CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr,
    LaunchConfig,
};

use crate::error::Result;
use crate::gpu::Gpu;

/// One kernel's arguments, gathered before [`Launch::launch`]. Each argument's value is copied
/// into `words` (8-byte aligned); the driver reads each parameter from its offset there.
pub(crate) struct Launch<'a> {
    gpu: &'a Gpu,
    function: &'a CudaFunction,
    words: Vec<u64>,
    offsets: Vec<usize>,
}

/// A value a kernel takes by value: a device pointer, a scalar or a plain C struct.
pub(crate) trait KernelArg {
    /// Appends the argument's bytes to `launch`.
    fn push(self, launch: &mut Launch<'_>);
}

/// Scalars and C structs passed by value.
pub(crate) trait ByValue: DeviceRepr + Copy {}
impl ByValue for i32 {}
impl ByValue for u32 {}
impl ByValue for u64 {}
impl ByValue for i64 {}
impl ByValue for f32 {}

impl<V: ByValue> KernelArg for &V {
    fn push(self, launch: &mut Launch<'_>) {
        launch.value(self);
    }
}

impl<T> KernelArg for &CudaSlice<T> {
    fn push(self, launch: &mut Launch<'_>) {
        let (ptr, _sync) = self.device_ptr(&launch.gpu.stream);
        launch.value(&ptr);
    }
}

impl<T> KernelArg for &mut CudaSlice<T> {
    fn push(self, launch: &mut Launch<'_>) {
        let stream = launch.gpu.stream.clone();
        let (ptr, _sync) = self.device_ptr_mut(&stream);
        launch.value(&ptr);
    }
}

impl<T> KernelArg for &CudaView<'_, T> {
    fn push(self, launch: &mut Launch<'_>) {
        let (ptr, _sync) = self.device_ptr(&launch.gpu.stream);
        launch.value(&ptr);
    }
}

impl<T> KernelArg for &mut CudaViewMut<'_, T> {
    fn push(self, launch: &mut Launch<'_>) {
        let stream = launch.gpu.stream.clone();
        let (ptr, _sync) = self.device_ptr_mut(&stream);
        launch.value(&ptr);
    }
}

impl<'a> Launch<'a> {
    pub(crate) fn new(gpu: &'a Gpu, function: &'a CudaFunction) -> Self {
        Launch {
            gpu,
            function,
            words: Vec::with_capacity(32),
            offsets: Vec::with_capacity(16),
        }
    }

    /// Appends the next argument.
    pub(crate) fn arg(&mut self, a: impl KernelArg) -> &mut Self {
        a.push(self);
        self
    }

    fn value<V: Copy>(&mut self, v: &V) {
        let size = std::mem::size_of::<V>();
        let at = self.words.len();
        self.words.resize(at + size.div_ceil(8), 0);
        // SAFETY: `words[at..]` was just sized to hold `size` bytes, and `V: Copy` (a plain
        // value: a device pointer, a scalar or a #[repr(C)] struct of them) may be copied as
        // bytes; the regions do not overlap (`v` is not in `words`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (v as *const V).cast::<u8>(),
                self.words.as_mut_ptr().add(at).cast::<u8>(),
                size,
            );
        }
        self.offsets.push(at);
    }

    /// Launches the kernel on the device's stream with `cfg`, allowed to overlap the previous
    /// kernel's end when the device has programmatic dependent launch turned on.
    ///
    /// # Safety
    /// The arguments must match the kernel's parameters in number, order and type, and the
    /// grid must keep every access of the kernel inside the buffers passed (each call site's
    /// SAFETY comment says how).
    pub(crate) unsafe fn launch(&mut self, cfg: LaunchConfig) -> Result<()> {
        let base = self.words.as_mut_ptr();
        let mut params: Vec<*mut c_void> = self
            .offsets
            .iter()
            // SAFETY: every offset lies inside `words` (pushed by `value`).
            .map(|&o| unsafe { base.add(o) }.cast::<c_void>())
            .collect();
        // SAFETY: an all-zero attribute value is a valid union value (every member is plain
        // data).
        let mut value: CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
        value.programmaticStreamSerializationAllowed = 1;
        let mut attribute = CUlaunchAttribute {
            id: CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            pad: [0; 4],
            value,
        };
        let overlap = self.gpu.pdl();
        let config = CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.gpu.stream.cu_stream(),
            attrs: if overlap {
                &mut attribute
            } else {
                std::ptr::null_mut()
            },
            numAttrs: u32::from(overlap),
        };
        self.gpu.ctx.bind_to_thread()?;
        // SAFETY: `config` names this device's live stream and, when `numAttrs` is 1, the one
        // attribute above, both alive for the call; `params` holds one pointer per kernel
        // parameter into `words`, which outlives the call; the caller vouches that they match
        // the kernel's signature and that the grid keeps its accesses in bounds.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                self.function.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()?;
        Ok(())
    }
}
