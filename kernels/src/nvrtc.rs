//! Compiling a [`Source`] to a cubin with NVRTC.
//!
//! The cubin is compiled for the exact compute capability of the device (`sm_80`, `sm_90`, …),
//! so the driver loads machine code and JIT-compiles nothing; a cubin from a newer NVRTC
//! minor release loads on an older driver of the same major release, which PTX would not.

use std::ffi::CString;

use cudarc::nvrtc::{result, sys};

use crate::error::{Error, Result};
use crate::source::Source;

/// A compute capability, `sm_{major}{minor}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Arch {
    /// Major version (8 for Ampere, 9 for Hopper).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl Arch {
    /// Ampere (A100).
    pub const SM80: Arch = Arch { major: 8, minor: 0 };
    /// Hopper (H100, H200).
    pub const SM90: Arch = Arch { major: 9, minor: 0 };

    /// Whether the kernels can run on it (`mma.sync` with BF16 needs sm_80).
    pub fn supported(self) -> bool {
        self.major >= 8
    }

    /// Whether it has Hopper's warpgroup instructions (`wgmma`, gemm_sm90.cu): sm_90 exactly,
    /// whose cubins are compiled for the architecture-specific target `sm_90a`.
    pub fn has_wgmma(self) -> bool {
        self == Arch::SM90
    }

    /// The target NVRTC compiles for: `sm_90a` on sm_90 (its features, `wgmma` among them,
    /// are in no later architecture, and the cubin runs on sm_90 devices only, which is the
    /// device it is compiled for), `sm_XY` elsewhere.
    pub fn target(self) -> String {
        if self.has_wgmma() {
            format!("{self}a")
        } else {
            self.to_string()
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sm_{}{}", self.major, self.minor)
    }
}

/// A compiled source.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The cubin.
    pub cubin: Vec<u8>,
    /// NVRTC's log: empty when there were no warnings.
    pub log: String,
}

/// Whether libnvrtc can be loaded.
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library names cudarc knows; no symbol is called.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    if !available() {
        return Err(Error::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both pointers are valid for the call.
    let rc = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    rc.result()
        .map_err(|e| compile_error("(version)", "-", e.to_string()))?;
    Ok((major, minor))
}

/// Compile-time switches of the kernels, so that `ci/gpu-check` can time a technique against
/// its absence in one run. The default is what the runtime uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KernelOptions {
    /// Leave out the GEMVs' request to L2 for their weight rows before they wait for the
    /// previous kernel (`prefetch_row`, common.cuh). Results are the same either way.
    pub no_weight_prefetch: bool,
}

/// The options every source is compiled with.
pub fn options(arch: Arch) -> Vec<String> {
    options_for(arch, KernelOptions::default())
}

/// The options every source is compiled with under `kernel` options.
pub fn options_for(arch: Arch, kernel: KernelOptions) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture={}", arch.target()),
        "--std=c++17".into(),
        "--device-as-default-execution-space".into(),
        "-lineinfo".into(),
    ];
    if kernel.no_weight_prefetch {
        o.push("-DCOCOON_NO_WEIGHT_PREFETCH".into());
    }
    o
}

/// Compiles `source` for `arch`. Every kernel the source lists is registered as a name
/// expression, so a listed kernel missing from the text fails here.
pub fn compile(source: &Source, arch: Arch) -> Result<Compiled> {
    compile_for(source, arch, KernelOptions::default())
}

/// [`compile`] under `kernel` options.
pub fn compile_for(source: &Source, arch: Arch, kernel: KernelOptions) -> Result<Compiled> {
    if !available() {
        return Err(Error::NoNvrtc);
    }
    let fail = |log: String| compile_error(source.file, &arch.to_string(), log);
    let text =
        CString::new(source.program()).map_err(|_| fail("source holds a NUL byte".into()))?;
    let name = CString::new(source.file).map_err(|_| fail("file name holds a NUL byte".into()))?;
    let prog = result::create_program(&text, Some(&name)).map_err(|e| fail(e.to_string()))?;
    let out = compile_program(prog, source, arch, kernel).map_err(fail);
    // SAFETY: `prog` came from create_program above and is destroyed once, here.
    let destroyed = unsafe { result::destroy_program(prog) };
    let compiled = out?;
    destroyed.map_err(|e| compile_error(source.file, &arch.to_string(), e.to_string()))?;
    Ok(compiled)
}

fn compile_program(
    prog: sys::nvrtcProgram,
    source: &Source,
    arch: Arch,
    kernel: KernelOptions,
) -> std::result::Result<Compiled, String> {
    for kernel in source.kernels {
        let expr = CString::new(format!("&{kernel}")).map_err(|e| e.to_string())?;
        // SAFETY: `prog` is a live program not yet compiled; `expr` outlives the call.
        unsafe { sys::nvrtcAddNameExpression(prog, expr.as_ptr()) }
            .result()
            .map_err(|e| e.to_string())?;
    }
    // SAFETY: `prog` is a live program; the options are plain strings.
    let compiled = unsafe { result::compile_program(prog, &options_for(arch, kernel)) };
    // SAFETY: `prog` is live; get_program_log sizes its buffer from NVRTC.
    let log = unsafe { result::get_program_log(prog) }
        .map(|chars| {
            let bytes: Vec<u8> = chars.iter().map(|c| *c as u8).collect();
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    if let Err(e) = compiled {
        return Err(if log.is_empty() { e.to_string() } else { log });
    }
    let mut size = 0usize;
    // SAFETY: `prog` compiled successfully; `size` is a valid out-pointer.
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
        .result()
        .map_err(|e| e.to_string())?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has exactly the `size` bytes NVRTC asked for.
    unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| e.to_string())?;
    if cubin.is_empty() {
        return Err(format!("NVRTC produced no cubin for {arch}"));
    }
    Ok(Compiled { cubin, log })
}

fn compile_error(file: &'static str, arch: &str, log: String) -> Error {
    Error::Compile {
        file,
        arch: arch.to_string(),
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SOURCES;

    /// CI sets `COCOON_REQUIRE_NVRTC=1` (and installs NVRTC): there a missing NVRTC fails the
    /// test instead of skipping the compile check.
    fn nvrtc_or_skip() -> bool {
        if available() {
            return true;
        }
        assert!(
            std::env::var_os("COCOON_REQUIRE_NVRTC").is_none(),
            "COCOON_REQUIRE_NVRTC is set but libnvrtc cannot be loaded"
        );
        eprintln!("libnvrtc not found: compile check not run");
        false
    }

    #[test]
    fn every_source_compiles_for_sm80_and_sm90_without_warnings() {
        if !nvrtc_or_skip() {
            return;
        }
        for arch in [Arch::SM80, Arch::SM90] {
            for source in SOURCES {
                let compiled = compile(source, arch)
                    .unwrap_or_else(|e| panic!("{} for {arch}: {e}", source.file));
                assert!(
                    compiled.log.is_empty(),
                    "{} for {arch} has warnings:\n{}",
                    source.file,
                    compiled.log
                );
                // An ELF image.
                assert_eq!(&compiled.cubin[..4], b"\x7fELF", "{}", source.file);
            }
        }
    }

    #[test]
    fn the_gemv_without_its_weight_prefetch_is_other_code() {
        if !nvrtc_or_skip() {
            return;
        }
        let gemv = SOURCES.iter().find(|s| s.file == "gemv.cu").unwrap();
        let with = compile(gemv, Arch::SM90).unwrap();
        let without = compile_for(
            gemv,
            Arch::SM90,
            KernelOptions {
                no_weight_prefetch: true,
            },
        )
        .unwrap();
        assert!(without.log.is_empty(), "{}", without.log);
        assert_ne!(with.cubin, without.cubin);
    }

    #[test]
    fn sm90_gets_the_wgmma_gemm_and_sm80_does_not() {
        if !nvrtc_or_skip() {
            return;
        }
        // gemm_sm90.cu keeps its body only where NVRTC defines sm_90a's feature macro.
        let probe = |arch| {
            let src = Source {
                file: "probe.cu",
                text: "#ifndef __CUDA_ARCH_FEAT_SM90_ALL\n#error no sm_90a features\n#endif\n\
                       extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }\n",
                kernels: &["k"],
            };
            compile(&src, arch)
        };
        assert!(probe(Arch::SM90).is_ok());
        let err = probe(Arch::SM80).unwrap_err().to_string();
        assert!(err.contains("no sm_90a features"), "{err}");
        // The wgmma kernels compile to far more code than the trap left on sm_80.
        let wg = SOURCES.iter().find(|s| s.file == "gemm_sm90.cu").unwrap();
        let (sm90, sm80) = (
            compile(wg, Arch::SM90).unwrap(),
            compile(wg, Arch::SM80).unwrap(),
        );
        assert!(
            sm90.cubin.len() > 2 * sm80.cubin.len(),
            "{} vs {} bytes",
            sm90.cubin.len(),
            sm80.cubin.len()
        );
    }

    #[test]
    fn a_listed_kernel_missing_from_the_source_fails_to_compile() {
        if !nvrtc_or_skip() {
            return;
        }
        let bad = Source {
            file: "bad.cu",
            text: "extern \"C\" __global__ void present(float* x) { x[0] = 1.0f; }\n",
            kernels: &["present", "absent"],
        };
        let err = compile(&bad, Arch::SM90).unwrap_err();
        assert!(
            matches!(err, Error::Compile { file: "bad.cu", .. }),
            "{err}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        if !nvrtc_or_skip() {
            return;
        }
        let bad = Source {
            file: "broken.cu",
            text: "\n\nextern \"C\" __global__ void k(float* x) { x[0] = ; }\n",
            kernels: &["k"],
        };
        let msg = compile(&bad, Arch::SM80).unwrap_err().to_string();
        assert!(msg.contains("broken.cu(3)"), "{msg}");
    }

    #[test]
    fn warnings_are_reported_in_the_log() {
        if !nvrtc_or_skip() {
            return;
        }
        let noisy = Source {
            file: "noisy.cu",
            text: "extern \"C\" __global__ void k(float* x) { int unused; x[0] = 1.0f; }\n",
            kernels: &["k"],
        };
        let compiled = compile(&noisy, Arch::SM90).unwrap();
        assert!(compiled.log.contains("unused"), "log: {:?}", compiled.log);
    }

    #[test]
    fn arch_names() {
        assert_eq!(Arch::SM80.to_string(), "sm_80");
        assert_eq!(Arch { major: 9, minor: 0 }.to_string(), "sm_90");
        assert_eq!(Arch::SM90.target(), "sm_90a");
        assert_eq!(Arch::SM80.target(), "sm_80");
        assert_eq!(
            Arch {
                major: 10,
                minor: 0
            }
            .target(),
            "sm_100"
        );
        assert!(Arch::SM90.has_wgmma() && !Arch::SM80.has_wgmma());
        assert!(Arch::SM80.supported());
        assert!(!Arch { major: 7, minor: 5 }.supported());
    }
}
