//! A CUDA device with every kernel loaded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::cache::KernelCache;
use crate::error::{Error, Result};
use crate::graph::GraphSwitch;
use crate::nvrtc::{self, Arch, KernelOptions};
use crate::source::SOURCES;
use crate::wgmma::WgmmaCheck;

/// An open device: its context, the one stream every launch goes to, and the kernels.
///
/// Every operation is issued on that single stream, in order, so no event tracking between
/// streams is needed (it is turned off) and a sequence of launches can be captured in a CUDA
/// graph.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    name: String,
    arch: Arch,
    functions: HashMap<&'static str, CudaFunction>,
    pub(crate) graph_switch: GraphSwitch,
    /// While a profile runs ([`Gpu::profile_start`]).
    profile: Mutex<Option<Profile>>,
    /// Whether launches may overlap the previous kernel's end (programmatic dependent launch).
    pdl: AtomicBool,
    /// The prefill GEMM's workspace, kept between launches (grown, never shrunk).
    pub(crate) gemm_scratch: Mutex<GemmScratch>,
    /// Whether the prefill GEMM runs on `wgmma` (crate::wgmma).
    pub(crate) wgmma: AtomicBool,
    /// The check of the wgmma GEMM at open, where it ran.
    pub(crate) wgmma_check: Option<WgmmaCheck>,
}

/// The prefill GEMM's workspace: the partial products of a split product's splits. Only this
/// device's stream uses it, so stream order is all its reuse needs.
#[derive(Default)]
pub(crate) struct GemmScratch {
    pub(crate) parts: Option<CudaSlice<f32>>,
}

/// A running profile: a timed event recorded on the stream before each launch, with the
/// kernel's name, and the scratch copied ahead of the first launch.
struct Profile {
    events: Vec<(&'static str, CudaEvent)>,
    ahead: Option<(CudaSlice<u8>, CudaSlice<u8>)>,
}

/// Copies of the profile's scratch queued before its first launch.
const PROFILE_AHEAD_COPIES: usize = 8;

/// The device time of one kernel over a profile: from the event before its launch to the next
/// launch's (or the profile's end).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's name.
    pub name: &'static str,
    /// Launches of it in the profile.
    pub launches: usize,
    /// Their device time, in milliseconds.
    pub ms: f64,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library names cudarc knows; calls no symbol.
    unsafe { sys::is_culib_present() }
}

/// The driver's CUDA version (e.g. 13000 for 13.0).
pub fn driver_version() -> Result<i32> {
    if !driver_present() {
        return Err(Error::NoDriver("libcuda.so not found".into()));
    }
    let mut v = 0;
    // SAFETY: the library is present; `v` is a valid out-pointer.
    unsafe { sys::cuDriverGetVersion(&mut v) }.result()?;
    Ok(v)
}

impl Gpu {
    /// Opens device `ordinal`, compiling (or taking from `cache`) and loading every kernel for
    /// its compute capability. Without a driver, a device, or NVRTC this is an error, never a
    /// crash.
    pub fn open(ordinal: usize, cache: Option<&KernelCache>) -> Result<Gpu> {
        Gpu::open_with(ordinal, cache, KernelOptions::default())
    }

    /// [`Gpu::open`] with the kernels compiled under `kernel` options (for timing a technique
    /// against its absence; results are the same).
    pub fn open_with(
        ordinal: usize,
        cache: Option<&KernelCache>,
        kernel: KernelOptions,
    ) -> Result<Gpu> {
        let driver = driver_version()?;
        let count = CudaContext::device_count()
            .map_err(|e| Error::NoDriver(format!("the driver did not initialise: {e}")))?;
        let count = usize::try_from(count).unwrap_or(0);
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        let arch = Arch {
            major: u32::try_from(major).unwrap_or(0),
            minor: u32::try_from(minor).unwrap_or(0),
        };
        if !arch.supported() {
            return Err(Error::UnsupportedDevice {
                major: arch.major,
                minor: arch.minor,
            });
        }
        // SAFETY: all work of this context goes to the one stream created below, in order, so
        // the cross-stream events cudarc would record are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let nvrtc_version = nvrtc::version()?;
        let mut functions = HashMap::new();
        for source in SOURCES {
            let key = KernelCache::key(source, arch, kernel, nvrtc_version, driver);
            let cubin = match cache.and_then(|c| c.get(&key)) {
                Some(cubin) => cubin,
                None => {
                    let compiled = nvrtc::compile_for(source, arch, kernel)?;
                    if let Some(c) = cache {
                        if let Err(e) = c.put(&key, &compiled.cubin) {
                            tracing::warn!("not caching {}: {e}", source.file);
                        }
                    }
                    compiled.cubin
                }
            };
            let module = ctx.load_module(Ptx::from_binary(cubin))?;
            for name in source.kernels {
                functions.insert(*name, module.load_function(name)?);
            }
        }
        let name = ctx.name()?;
        let mut gpu = Gpu {
            ctx,
            stream,
            name,
            arch,
            functions,
            graph_switch: GraphSwitch::new(),
            profile: Mutex::new(None),
            gemm_scratch: Mutex::new(GemmScratch::default()),
            pdl: AtomicBool::new(
                arch.major >= 9 && std::env::var_os("COCOON_CUDA_PDL").is_none_or(|v| v != "0"),
            ),
            wgmma: AtomicBool::new(false),
            wgmma_check: None,
        };
        gpu.start_wgmma()?;
        Ok(gpu)
    }

    /// The device's name (`NVIDIA H100 80GB HBM3`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its compute capability.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Turns programmatic dependent launch on or off (on by default on sm_90 and later unless
    /// `COCOON_CUDA_PDL=0`; older devices ignore turning it on). On, each kernel may be
    /// launched while the previous one finishes; results are identical either way.
    pub fn set_pdl(&self, on: bool) {
        self.pdl
            .store(on && self.arch.major >= 9, Ordering::Relaxed);
    }

    /// Whether launches overlap the previous kernel's end.
    pub fn pdl(&self) -> bool {
        self.pdl.load(Ordering::Relaxed)
    }

    /// The stream every operation is issued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Waits for everything issued so far.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    pub(crate) fn function(&self, name: &'static str) -> Result<&CudaFunction> {
        let f = self
            .functions
            .get(name)
            .ok_or_else(|| crate::error::shape(name, "kernel not loaded"))?;
        let mut profile = self.profile.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = profile.as_mut() {
            if let Some((src, dst)) = p.ahead.as_mut() {
                for _ in 0..PROFILE_AHEAD_COPIES {
                    self.stream.memcpy_dtod(src, dst)?;
                }
                p.ahead = None;
            }
            p.events.push((name, self.timed_event()?));
        }
        Ok(f)
    }

    /// An event recorded now on the stream, with timing on: device time between two of them
    /// is `a.elapsed_ms(&b)`.
    pub fn timed_event(&self) -> Result<CudaEvent> {
        Ok(self
            .stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?)
    }

    /// Starts timing every kernel launched from now on, with an event before each launch.
    /// For eager launches only (turn graphs and PDL off): events do not time the nodes of a
    /// replayed graph. A kernel's time is its own only while the device is behind the host;
    /// otherwise it includes the wait for the host's next launch. So, when `ahead_bytes` is not
    /// zero, copies of a scratch buffer of that size (eight of them, device to device) are
    /// queued just before the first launch, giving the host a head start over the device.
    pub fn profile_start(&self, ahead_bytes: usize) -> Result<()> {
        let ahead = if ahead_bytes == 0 {
            None
        } else {
            Some((
                self.stream.alloc_zeros::<u8>(ahead_bytes)?,
                self.stream.alloc_zeros::<u8>(ahead_bytes)?,
            ))
        };
        *self.profile.lock().unwrap_or_else(PoisonError::into_inner) = Some(Profile {
            events: Vec::new(),
            ahead,
        });
        Ok(())
    }

    /// Ends the profile begun by [`Gpu::profile_start`], waits for the device, and returns
    /// each kernel's total device time, in the order the kernels first ran. The last kernel's
    /// time runs to this call's own event, so it includes any work queued after it.
    pub fn profile_finish(&self) -> Result<Vec<KernelTime>> {
        let events = self
            .profile
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|p| p.events)
            .unwrap_or_default();
        let end = self.timed_event()?;
        let mut times: Vec<KernelTime> = Vec::new();
        for (i, (name, start)) in events.iter().enumerate() {
            let next = events.get(i + 1).map_or(&end, |(_, e)| e);
            let ms = f64::from(start.elapsed_ms(next)?);
            match times.iter_mut().find(|t| t.name == *name) {
                Some(t) => {
                    t.launches += 1;
                    t.ms += ms;
                }
                None => times.push(KernelTime {
                    name,
                    launches: 1,
                    ms,
                }),
            }
        }
        Ok(times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_opening_is_an_error_not_a_crash() {
        if driver_present() {
            return; // a GPU machine: ci/gpu-check covers opening
        }
        let err = Gpu::open(0, None).unwrap_err();
        assert!(matches!(err, Error::NoDriver(_)), "{err}");
        assert!(err.to_string().contains("no CUDA driver"));
    }
}
