//! `cuda-emu` (run by `ci/cuda-emu`, docs/cuda.md): every kernel of `kernels/cuda/` (or of
//! `$COCOON_EMU_KERNELS`) compiled unchanged by the host C++ compiler over the emulation of the
//! CUDA execution model in `kernels/emu/` (each CUDA thread a fiber, real barriers, warp
//! shuffles, `mma.sync` and `wgmma` from the PTX ISA), launched with the grids and arguments of
//! the launch wrappers (`kernels/src/ops.rs`), and compared with the CPU backend over many
//! shapes; then the same on a ThreadSanitizer build and on an AddressSanitizer + UBSan build
//! (every buffer its own exact allocation) for the smaller shapes. Ends with
//! `cuda-emu: N passed, M failed`; exit 1 when any failed. `COCOON_EMU_SHAPES=small`: the
//! small shapes only; `COCOON_EMU_BUILDS=plain,tsan,asan` (default all): which builds run;
//! `COCOON_EMU_OUT=DIR` (default `target/cuda-emu`): where the emulator builds go;
//! `COCOON_EMU_FAIL_FAST=1`: stop at the first failed check (still `N passed, M failed`);
//! `COCOON_EMU_CACHE=DIR` (default `target/cuda-emu/objects`): their compiled objects, one per
//! .cu file and build, kept under the SHA-256 of what was compiled (a broken copy of one file
//! recompiles that file alone).
//!
//! Inline PTX is rewritten into calls of the emulator (`asm(...)` → `emu::ptx(...)` with the
//! addresses and sizes of its operands); nothing else in the sources is touched.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cocoon_bench::kernel_check::{act, encode, random, read, weight, Report};
use cocoon_kernels::shapes::{
    gemv_grid, gemv_per_warp, prefill_head_dim, prefill_tiles, split_grid_chunks, GemmTile,
    WeightType, ATT_WARPS, GEMM_TILES, GEMM_WG_TILES, GEMV_MAX_WEIGHTS, GEMV_WARPS, PF_THREADS,
};
use cocoon_kernels::source::SOURCES;
use cocoon_runtime::backend::cpu::CpuBackend;
use cocoon_runtime::backend::{AttentionShape, Backend, Batch, KvType, Logits, RowKind, KV_BLOCK};
use cocoon_runtime::model::weights::DType;
use cocoon_runtime::sampling::argmax;
use cocoon_tests::Rng;
use sha2::{Digest, Sha256};

/// How long one launch may take before the emulator is taken to be stuck (a deadlock).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// Building the emulated kernels.

/// The sources with every `asm [volatile] ( "template" : outputs : inputs [: clobbers] );`
/// replaced by a call of `emu::ptx` with the operands' addresses and sizes.
fn rewrite_asm(src: &str) -> Result<String, String> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let word = |at: usize, w: &str| {
        src[at..].starts_with(w)
            && (at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_'))
            && b.get(at + w.len())
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
    };
    while i < b.len() {
        // Comments and strings are copied as they are.
        if src[i..].starts_with("//") {
            let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
            out.push_str(&src[i..end]);
            i = end;
            continue;
        }
        if !word(i, "asm") {
            let c = src[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let mut j = i + 3;
        let skip_ws = |j: &mut usize| {
            while *j < b.len() && b[*j].is_ascii_whitespace() {
                *j += 1;
            }
        };
        skip_ws(&mut j);
        if word(j, "volatile") {
            j += "volatile".len();
            skip_ws(&mut j);
        }
        if b.get(j) != Some(&b'(') {
            return Err(format!("`asm` without `(` at byte {i}"));
        }
        // The matching parenthesis, strings skipped.
        let (start, mut depth, mut k) = (j + 1, 0i32, j);
        loop {
            match b.get(k) {
                None => return Err(format!("unterminated asm at byte {i}")),
                Some(b'"') => {
                    k += 1;
                    while k < b.len() && b[k] != b'"' {
                        k += if b[k] == b'\\' { 2 } else { 1 };
                    }
                }
                Some(b'(') => depth += 1,
                Some(b')') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        let body = &src[start..k];
        let sections = split_top(body, b':');
        let template: String = string_literals(sections.first().copied().unwrap_or(""))?;
        let operands = |s: Option<&&str>| -> Result<Vec<String>, String> {
            let Some(s) = s else { return Ok(Vec::new()) };
            split_top(s, b',')
                .into_iter()
                .filter(|o| !o.trim().is_empty())
                .map(|o| {
                    let o = o.trim();
                    let open = o
                        .find('(')
                        .ok_or_else(|| format!("asm operand without an expression: {o}"))?;
                    Ok(o[open + 1..o.len() - 1].to_owned())
                })
                .collect()
        };
        let outs = operands(sections.get(1))?;
        let ins = operands(sections.get(2))?;
        let mut call = String::from("{ ");
        for (n, e) in ins.iter().enumerate() {
            call += &format!("auto emu_in{n} = ({e}); ");
        }
        // Arrays of at least one element (an instruction may have no operands at all).
        let list = |v: Vec<String>, none: &str| {
            if v.is_empty() {
                none.to_owned()
            } else {
                v.join(", ")
            }
        };
        call += &format!(
            "void* emu_o[] = {{{}}}; int emu_os[] = {{{}}}; void* emu_i[] = {{{}}}; int emu_is[] = {{{}}}; ",
            list(outs.iter().map(|e| format!("(void*)&({e})")).collect(), "nullptr"),
            list(outs.iter().map(|e| format!("(int)sizeof({e})")).collect(), "0"),
            list((0..ins.len()).map(|n| format!("(void*)&emu_in{n}")).collect(), "nullptr"),
            list((0..ins.len()).map(|n| format!("(int)sizeof(emu_in{n})")).collect(), "0"),
        );
        call += &format!(
            "emu::ptx({template:?}, emu_o, emu_os, {}, emu_i, emu_is, {}); }}",
            outs.len(),
            ins.len()
        );
        out.push_str(&call);
        // Past the closing parenthesis and its semicolon; the line breaks of the statement are
        // kept, so that line numbers (in compiler and ThreadSanitizer messages) stay the source's.
        let from = i;
        i = k + 1;
        while i < b.len() && b[i].is_ascii_whitespace() && b[i] != b'\n' {
            i += 1;
        }
        if b.get(i) == Some(&b';') {
            i += 1;
        }
        out.push_str(&"\n".repeat(src[from..i].matches('\n').count()));
    }
    Ok(out)
}

/// `s` split at `sep` where no parenthesis, brace or string is open.
fn split_top(s: &str, sep: u8) -> Vec<&str> {
    let b = s.as_bytes();
    let (mut parts, mut depth, mut from, mut i) = (Vec::new(), 0i32, 0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&s[from..i]);
                from = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[from..]);
    parts
}

/// The concatenation of the string literals in `s` (escapes kept as written are only `\"`,
/// `\\`, `\n`, `\t`, which PTX templates use).
fn string_literals(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    None => return Err("unterminated string in asm".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(o) => out.push(o),
                        None => return Err("unterminated escape in asm".into()),
                    },
                    Some(o) => out.push(o),
                }
            },
            c if c.is_whitespace() => {}
            other => return Err(format!("unexpected {other:?} in an asm template")),
        }
    }
    Ok(out)
}

/// How the emulated kernels are built.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    /// Optimised, every shape.
    Plain,
    /// ThreadSanitizer: a missing barrier is a data race.
    Tsan,
    /// AddressSanitizer and UBSan, each buffer its own exact allocation: any access outside a
    /// buffer, any undefined behaviour, is a report.
    Asan,
}

impl Build {
    /// The compiler's flags for every object and for the link.
    fn flags(self) -> &'static [&'static str] {
        match self {
            Build::Plain => &["-O2"],
            Build::Tsan => &["-O1", "-g", "-fsanitize=thread"],
            Build::Asan => &[
                "-O1",
                "-g",
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all",
            ],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Build::Plain => "plain",
            Build::Tsan => "tsan",
            Build::Asan => "asan",
        }
    }
}

/// Builds the emulator: each .cu file of `kernels` its own translation unit (emulation
/// headers, common.cuh, the file with its asm rewritten, and the table that registers the
/// file's kernels, as `kernels/src/source.rs` lists them), the runtime another, then linked.
/// Objects are kept in `cache` under the SHA-256 of their text, the headers, the compiler and
/// the flags, so a copy of the sources with one file broken recompiles that file alone. The
/// executable's path, or the compiler's complaint.
fn build(
    kernels: &Path,
    emu: &Path,
    out: &Path,
    cache: &Path,
    kind: Build,
) -> Result<PathBuf, String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let headers = read(&emu.join("emu.h"))? + &read(&emu.join("launch.h"))?;
    let compile = |name: &str, text: &str| -> Result<PathBuf, String> {
        let mut h = Sha256::new();
        for part in [cxx.as_str(), &kind.flags().join(" "), &headers, text] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let object = cache.join(format!("{}.o", hex::encode(h.finalize())));
        if object.exists() {
            return Ok(object);
        }
        let src = out.join(format!("{name}-{}.cpp", kind.name()));
        std::fs::write(&src, text).map_err(|e| e.to_string())?;
        // Written beside its final name and renamed, so that builds side by side never see
        // half an object.
        let tmp = object.with_extension(format!("o.{}.{}", std::process::id(), kind.name()));
        let mut cmd = Command::new(&cxx);
        cmd.args(["-std=c++20", "-pthread", "-w", "-c", "-I"])
            .arg(emu)
            .args(kind.flags())
            .arg(&src)
            .arg("-o")
            .arg(&tmp);
        run_compiler(cmd, &format!("{name} does not compile under the emulation"))?;
        std::fs::rename(&tmp, &object).map_err(|e| e.to_string())?;
        Ok(object)
    };
    let common =
        rewrite_asm(&read(&kernels.join("common.cuh"))?).map_err(|e| format!("common.cuh: {e}"))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(kernels)
        .map_err(|e| format!("{}: {e}", kernels.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    let mut objects = vec![compile("runtime", &read(&emu.join("runtime.cpp"))?)?];
    for f in &files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // File names only in #line, so that a copy elsewhere makes the same text.
        let mut tu = format!(
            "#include \"emu.h\"\n#include \"launch.h\"\n#line 1 \"common.cuh\"\n{common}\n#line 1 \"{name}\"\n"
        );
        tu += &rewrite_asm(&read(f)?).map_err(|e| format!("{name}: {e}"))?;
        // The file's kernels (`kernels/src/source.rs`), registered with the runtime.
        let listed = SOURCES
            .iter()
            .find(|s| s.file == name)
            .map_or(&[][..], |s| s.kernels);
        if !listed.is_empty() {
            tu += "\n#line 1 \"kernel table\"\nstatic const emu::Entry ENTRIES[] = {\n";
            for k in listed {
                tu += &format!("    EMU_ENTRY({k}),\n");
            }
            tu += "};\nstatic const emu::Registration REGISTRATION(ENTRIES, sizeof ENTRIES / sizeof ENTRIES[0]);\n";
        }
        objects.push(compile(name.trim_end_matches(".cu"), &tu)?);
    }
    let exe = out.join(format!("emu-{}", kind.name()));
    let mut cmd = Command::new(&cxx);
    cmd.arg("-pthread")
        .args(kind.flags())
        .args(&objects)
        .arg("-o")
        .arg(&exe);
    run_compiler(cmd, "the emulator does not link")?;
    Ok(exe)
}

/// Runs the compiler; on failure, `failure` and the first 4,000 characters of its complaint.
fn run_compiler(mut cmd: Command, failure: &str) -> Result<(), String> {
    let o = cmd
        .output()
        .map_err(|e| format!("running the C++ compiler: {e}"))?;
    if o.status.success() {
        return Ok(());
    }
    let said: String = String::from_utf8_lossy(&o.stderr)
        .chars()
        .take(4000)
        .collect();
    Err(format!("{failure}:\n{said}"))
}

// ---------------------------------------------------------------------------------------
// Talking to the emulator.

enum Arg {
    Buf(Vec<u8>),
    Scalar(Vec<u8>),
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
fn int(v: i32) -> Arg {
    Arg::Scalar(v.to_le_bytes().to_vec())
}
fn float(v: f32) -> Arg {
    Arg::Scalar(v.to_le_bytes().to_vec())
}
impl Arg {
    fn bytes(&self) -> &[u8] {
        match self {
            Arg::Buf(b) | Arg::Scalar(b) => b,
        }
    }
}

struct Proc {
    child: Arc<Mutex<Child>>,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// The emulator process, started again after it died (a ThreadSanitizer report ends it).
struct Emu {
    exe: PathBuf,
    proc: Option<Proc>,
    /// Each buffer its own exact allocation (the AddressSanitizer build).
    exact: bool,
}

impl Emu {
    fn start(&mut self) -> Result<&mut Proc, String> {
        if self.proc.is_none() {
            let mut child = Command::new(&self.exe)
                .env("TSAN_OPTIONS", "halt_on_error=1 exitcode=66")
                .env("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1")
                .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
                .env("EMU_EXACT_BUFFERS", if self.exact { "1" } else { "" })
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", self.exe.display()))?;
            let (stdin, stdout) = (
                child.stdin.take().ok_or("no stdin")?,
                child.stdout.take().ok_or("no stdout")?,
            );
            self.proc = Some(Proc {
                child: Arc::new(Mutex::new(child)),
                stdin,
                stdout,
            });
        }
        self.proc.as_mut().ok_or_else(|| "no emulator".into())
    }

    /// Runs `name` on `grid` blocks of `block` threads; buffer arguments come back changed.
    fn launch(
        &mut self,
        name: &str,
        grid: [u32; 3],
        block: u32,
        args: &mut [Arg],
    ) -> Result<(), String> {
        let r = self.try_launch(name, grid, block, args);
        if r.is_err() {
            if let Some(p) = self.proc.take() {
                let mut c = p.child.lock().map_err(|_| "poisoned")?;
                let _ = c.kill();
                let status = c.wait().map(|s| s.to_string()).unwrap_or_default();
                return r.map_err(|e| format!("{e} (emulator: {status})"));
            }
        }
        r
    }

    fn try_launch(
        &mut self,
        name: &str,
        grid: [u32; 3],
        block: u32,
        args: &mut [Arg],
    ) -> Result<(), String> {
        let p = self.start()?;
        let mut req = Vec::new();
        req.extend((name.len() as u32).to_le_bytes());
        req.extend(name.as_bytes());
        for d in [grid[0], grid[1], grid[2], block, 1, 1] {
            req.extend(d.to_le_bytes());
        }
        req.extend((args.len() as u32).to_le_bytes());
        for a in args.iter() {
            req.push(matches!(a, Arg::Scalar(_)) as u8);
            req.extend((a.bytes().len() as u64).to_le_bytes());
            req.extend(a.bytes());
        }
        p.stdin
            .write_all(&req)
            .map_err(|e| format!("{name}: {e}"))?;
        p.stdin.flush().map_err(|e| format!("{name}: {e}"))?;
        // A watchdog ends a launch that never answers (a deadlock in the kernel).
        let (done, wait) = mpsc::channel::<()>();
        let child = p.child.clone();
        let watchdog = std::thread::spawn(move || {
            if wait.recv_timeout(LAUNCH_TIMEOUT).is_err() {
                if let Ok(mut c) = child.lock() {
                    let _ = c.kill();
                }
            }
        });
        let answer = (|| -> Result<(), String> {
            let mut status = [0u8; 1];
            p.stdout
                .read_exact(&mut status)
                .map_err(|_| format!("{name}: the emulator ended without answering (crash, ThreadSanitizer report, or no answer in {} s)", LAUNCH_TIMEOUT.as_secs()))?;
            let mut len = [0u8; 8];
            if status[0] != 0 {
                p.stdout.read_exact(&mut len).map_err(|e| e.to_string())?;
                let mut msg = vec![0u8; u64::from_le_bytes(len) as usize];
                p.stdout.read_exact(&mut msg).map_err(|e| e.to_string())?;
                return Err(format!("{name}: {}", String::from_utf8_lossy(&msg)));
            }
            for a in args.iter_mut() {
                if let Arg::Buf(b) = a {
                    p.stdout.read_exact(&mut len).map_err(|e| e.to_string())?;
                    if u64::from_le_bytes(len) as usize != b.len() {
                        return Err(format!("{name}: a buffer came back with another length"));
                    }
                    p.stdout.read_exact(b).map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        })();
        let _ = done.send(());
        let _ = watchdog.join();
        answer
    }
}

// ---------------------------------------------------------------------------------------
// The checks: the launch wrappers' geometry, the CPU backend's results.

fn gpu_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
    }
}

struct Checks<'a> {
    cpu: &'a CpuBackend,
    emu: &'a mut Emu,
    report: &'a mut Report,
    rng: Rng,
    label: &'static str,
    /// Every GEMM tile shape for BF16 weights (the small shapes, which every build runs;
    /// F16 differs only in the mma instruction), and split products for both dtypes;
    /// otherwise the first tile only, and split products for BF16 only (the emulation of a
    /// 128 × 128 block is slow).
    every_tile: bool,
}

impl Checks<'_> {
    fn compare(&mut self, name: String, got: Result<Vec<f32>, String>, want: &[f32], tol: f32) {
        let name = format!("{} {name}", self.label);
        match got {
            Ok(g) => self.report.compare(name, &g, want, tol),
            Err(e) => self.report.fail(name, &e),
        }
    }

    /// `x · wᵀ` for the weights of `ns` rows each (one to three, as Q, K and V share one GEMV
    /// launch), the first `prompt_rows` rows through the GEMM as `Gpu::matmul_shared` sends
    /// them, the rest through one GEMV launch; then the last row again alone through the GEMV,
    /// which must give the same bits (batch invariance).
    fn matmul(&mut self, rows: usize, ns: &[usize], k: usize, dtype: DType, prompt_rows: usize) {
        let x = random(&mut self.rng, rows * k, 2.0);
        let ws: Vec<Vec<f32>> = ns
            .iter()
            .map(|&n| random(&mut self.rng, n * k, 0.2))
            .collect();
        let cpu = self.cpu;
        let xa = act(cpu, rows, k, &x);
        let gemm_rows = if dtype == DType::F32 { 0 } else { prompt_rows };
        let mut wants = Vec::new();
        for (w, &n) in ws.iter().zip(ns) {
            let wa = weight(cpu, dtype, &[n, k], w);
            let mut o = cpu.alloc(rows * n).unwrap();
            cpu.matmul(&xa, &wa, rows, gemm_rows, &mut o).unwrap();
            wants.push(read(cpu, &o, rows * n));
        }
        let mut gots: Vec<Result<Vec<u8>, String>> =
            ns.iter().map(|&n| Ok(vec![0u8; rows * n * 4])).collect();
        // The GEMM in every tile shape of gemm.cu (`every_tile`, else the first) and in the
        // warpgroup tiles of gemm_sm90.cu, unsplit and (k > 64) split over k in two splits (a
        // multiple of 32 columns, the second partial): the first tile's unsplit result is
        // compared with the CPU, every other tile must give the bits of the first with the
        // same split (in the emulator, where wgmma sums its 16 products as mma.sync does);
        // the split result is compared with the CPU too.
        let mut tiles_agree = true;
        let mut split_got: Vec<Result<Vec<u8>, String>> = Vec::new();
        let mut tiles = if self.every_tile && dtype == DType::BF16 {
            GEMM_TILES.to_vec()
        } else {
            GEMM_TILES[..1].to_vec()
        };
        tiles.extend(GEMM_WG_TILES);
        if gemm_rows > 0 {
            let xg = &x[..gemm_rows * k];
            for ((w, &n), got) in ws.iter().zip(ns).zip(gots.iter_mut()) {
                let wb = encode(dtype, w);
                let half = k.div_ceil(2).next_multiple_of(32);
                let split = k > 64 && (self.every_tile || dtype == DType::BF16);
                let widths: &[usize] = if split { &[k, half] } else { &[k] };
                for &k_split in widths {
                    let first = self.gemm(GEMM_TILES[0], k_split, dtype, xg, &wb, gemm_rows, n, k);
                    for &tile in &tiles[1..] {
                        let r = self.gemm(tile, k_split, dtype, xg, &wb, gemm_rows, n, k);
                        tiles_agree &= matches!((&first, &r), (Ok(a), Ok(b)) if a == b);
                    }
                    if k_split < k {
                        split_got.push(first);
                        continue;
                    }
                    *got = match (first, got.as_mut()) {
                        (Ok(f), Ok(g)) => {
                            g[..gemm_rows * n * 4].copy_from_slice(&f);
                            Ok(std::mem::take(g))
                        }
                        (Err(e), _) => Err(e),
                        (_, Err(e)) => Err(e.clone()),
                    };
                }
            }
        }
        // The last row's bits from the launch over all decode rows, and from a launch alone.
        let (mut in_group, mut alone) = (None, None);
        if rows > gemm_rows {
            let first = gemm_rows;
            let r = self.gemv(dtype, &ws, ns, k, &x[first * k..]);
            if let Some(Ok(y0)) = r.first() {
                in_group = Some(y0[y0.len() - ns[0] * 4..].to_vec());
            }
            for ((got, &n), r) in gots.iter_mut().zip(ns).zip(r.iter()) {
                *got = match (got.as_mut(), r) {
                    (Ok(g), Ok(y)) => {
                        g[first * n * 4..].copy_from_slice(y);
                        Ok(std::mem::take(g))
                    }
                    (Err(e), _) => Err(e.clone()),
                    (_, Err(e)) => Err(e.clone()),
                };
            }
            if rows - first > 1 {
                alone = self
                    .gemv(dtype, &ws[..1], &ns[..1], k, &x[(rows - 1) * k..])
                    .swap_remove(0)
                    .ok();
            }
        }
        let kind = match (gemm_rows, rows - gemm_rows) {
            (0, _) => "gemv",
            (_, 0) => "gemm",
            _ => "gemm+gemv",
        };
        let tol = match (gemm_rows > 0, dtype) {
            (false, _) => 1e-5,
            (true, DType::BF16) => 1e-2,
            _ => 2e-3,
        };
        let label = format!("{kind} {dtype:?} rows={rows} n={ns:?} k={k}");
        for (p, (got, want)) in gots.into_iter().zip(&wants).enumerate() {
            let name = if ns.len() > 1 {
                format!("{label} w{p}")
            } else {
                label.clone()
            };
            self.compare(name, got.map(|g| to_f32(&g)), want, tol);
        }
        if gemm_rows > 0 {
            let name = format!("{} {label} every GEMM tile shape, bitwise", self.label);
            self.report.check(name, tiles_agree);
        }
        for (p, got) in split_got.into_iter().enumerate() {
            let name = format!("{label} split k in two w{p}");
            let want: Vec<f32> = wants[p][..gemm_rows * ns[p]].to_vec();
            self.compare(name, got.map(|g| to_f32(&g)), &want, tol);
        }
        if rows - gemm_rows > 1 {
            let name = format!("{} {label} last row alone, bitwise", self.label);
            self.report
                .check(name, alone.is_some() && alone == in_group);
        }
    }

    /// The GEMM of `rows` rows of `x` by `w` (encoded) in `tile`, its sum over k split in
    /// `k_split` columns as `Gpu::gemm_planned` runs it (splits into a workspace, then
    /// `gemm_sum_splits`): the output's bytes.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        tile: GemmTile,
        k_split: usize,
        dtype: DType,
        x: &[f32],
        w: &[u8],
        rows: usize,
        n: usize,
        k: usize,
    ) -> Result<Vec<u8>, String> {
        let splits = k.div_ceil(k_split);
        let mut args = vec![
            Arg::Buf(f32s(x)),
            Arg::Buf(w.to_vec()),
            Arg::Buf(vec![0; splits * rows * n * 4]),
            int(rows as i32),
            int(n as i32),
            int(k as i32),
            int(k_split as i32),
        ];
        let (gx, gy) = tile.grid(rows, n);
        let kernel = tile
            .kernel(match dtype {
                DType::BF16 => WeightType::BF16,
                _ => WeightType::F16,
            })
            .ok_or("no kernel")?;
        self.emu.launch(
            kernel,
            [gx as u32, gy as u32, splits as u32],
            tile.threads() as u32,
            &mut args,
        )?;
        let parts = args[2].bytes().to_vec();
        if splits == 1 {
            return Ok(parts);
        }
        let mut args = vec![
            Arg::Buf(parts),
            Arg::Buf(vec![0; rows * n * 4]),
            int((rows * n) as i32),
            int(splits as i32),
        ];
        let blocks = (rows * n).div_ceil(256).min(1024) as u32;
        self.emu
            .launch("gemm_sum_splits", [blocks, 1, 1], 256, &mut args)?;
        Ok(args[1].bytes().to_vec())
    }

    /// Launches a GEMV-family kernel on the grid `Gpu::gemv` computes for it.
    fn launch_gemv(
        &mut self,
        kernel: &str,
        ns: &[usize],
        rows: usize,
        per_warp: usize,
        args: &mut [Arg],
    ) -> Result<(), String> {
        let g = gemv_grid(ns, rows, per_warp).map_err(|e| e.to_string())?;
        self.emu.launch(kernel, g, 32 * GEMV_WARPS as u32, args)
    }

    /// One GEMV launch over `ws` (rows of `x` of width `k`): each output's bytes.
    fn gemv(
        &mut self,
        dtype: DType,
        ws: &[Vec<f32>],
        ns: &[usize],
        k: usize,
        x: &[f32],
    ) -> Vec<Result<Vec<u8>, String>> {
        let rows = x.len() / k;
        let null = || Arg::Scalar(0u64.to_le_bytes().to_vec());
        let mut args = Vec::new();
        for p in 0..GEMV_MAX_WEIGHTS {
            args.push(ws.get(p).map_or_else(null, |w| Arg::Buf(encode(dtype, w))));
        }
        for p in 0..GEMV_MAX_WEIGHTS {
            args.push(
                ns.get(p)
                    .map_or_else(null, |&n| Arg::Buf(vec![0; rows * n * 4])),
            );
        }
        for p in 0..GEMV_MAX_WEIGHTS {
            args.push(int(ns.get(p).copied().unwrap_or(0) as i32));
        }
        args.extend([Arg::Buf(f32s(x)), int(rows as i32), int(k as i32)]);
        let per_warp = gemv_per_warp(rows);
        let kernel = match per_warp {
            4 => "gemv4",
            2 => "gemv2",
            _ => "gemv",
        };
        let launched = self.launch_gemv(
            &format!("{kernel}_{}", gpu_type(dtype)),
            ns,
            rows,
            per_warp,
            &mut args,
        );
        (0..ns.len())
            .map(|p| match &launched {
                Ok(()) => Ok(args[GEMV_MAX_WEIGHTS + p].bytes().to_vec()),
                Err(e) => Err(e.clone()),
            })
            .collect()
    }

    fn norm(&mut self, rows: usize, width: usize, dtype: DType) {
        let x = random(&mut self.rng, rows * width, 4.0);
        let y = random(&mut self.rng, rows * width, 4.0);
        let w = random(&mut self.rng, width, 1.0);
        let cpu = self.cpu;
        let (mut xa, ya, wa) = (
            act(cpu, rows, width, &x),
            act(cpu, rows, width, &y),
            weight(cpu, dtype, &[width], &w),
        );
        let mut o = cpu.alloc(rows * width).unwrap();
        cpu.rms_norm(&xa, &wa, 1e-5, rows, &mut o).unwrap();
        let plain = read(cpu, &o, rows * width);
        cpu.add_rms_norm(&mut xa, &ya, &wa, 1e-5, rows, width, &mut o)
            .unwrap();
        let (fused, summed) = (read(cpu, &o, rows * width), read(cpu, &xa, rows * width));
        let s = gpu_type(dtype);
        let mut args = vec![
            Arg::Buf(f32s(&x)),
            Arg::Buf(encode(dtype, &w)),
            Arg::Buf(vec![0; rows * width * 4]),
            int(rows as i32),
            int(width as i32),
            float(1e-5),
        ];
        let got = self.emu.launch(
            &format!("rms_norm_{s}"),
            [rows as u32, 1, 1],
            cocoon_kernels::shapes::NORM_THREADS as u32,
            &mut args,
        );
        self.compare(
            format!("rms_norm {dtype:?} {rows}x{width}"),
            got.map(|()| to_f32(args[2].bytes())),
            &plain,
            1e-5,
        );
        let mut args = vec![
            Arg::Buf(f32s(&x)),
            Arg::Buf(f32s(&y)),
            Arg::Buf(encode(dtype, &w)),
            Arg::Buf(vec![0; rows * width * 4]),
            int(rows as i32),
            int(width as i32),
            float(1e-5),
        ];
        let got = self.emu.launch(
            &format!("add_rms_norm_{s}"),
            [rows as u32, 1, 1],
            cocoon_kernels::shapes::NORM_THREADS as u32,
            &mut args,
        );
        let both = got.map(|()| [to_f32(args[3].bytes()), to_f32(args[0].bytes())].concat());
        self.compare(
            format!("add_rms_norm {dtype:?} {rows}x{width}"),
            both,
            &[fused, summed].concat(),
            1e-5,
        );
    }

    fn embed(&mut self, vocab: usize, width: usize, dtype: DType) {
        let table = random(&mut self.rng, vocab * width, 2.0);
        let ids: Vec<u32> = (0..17).map(|i| (i * 7919 % vocab) as u32).collect();
        let t = weight(self.cpu, dtype, &[vocab, width], &table);
        let mut o = self.cpu.alloc(ids.len() * width).unwrap();
        self.cpu
            .embed(
                &t,
                &cocoon_bench::kernel_check::staged(self.cpu, &ids),
                &mut o,
            )
            .unwrap();
        let want = read(self.cpu, &o, ids.len() * width);
        let mut args = vec![
            Arg::Buf(encode(dtype, &table)),
            Arg::Buf(u32s(&ids)),
            Arg::Buf(vec![0; ids.len() * width * 4]),
            int(ids.len() as i32),
            int(width as i32),
            int(vocab as i32),
        ];
        let got = self.emu.launch(
            &format!("embed_{}", gpu_type(dtype)),
            [ids.len() as u32, 1, 1],
            256,
            &mut args,
        );
        self.compare(
            format!("embed {dtype:?} vocab={vocab} width={width}"),
            got.map(|()| to_f32(args[2].bytes())),
            &want,
            0.0,
        );
    }

    /// The fused MLP first half of decode rows (`gemv_swiglu_*`) against the CPU's gate/up
    /// products and SwiGLU, and bit for bit against the GEMV of both weights followed by the
    /// swiglu kernel (what `Gpu::gate_up_swiglu` promises).
    fn gemv_swiglu(&mut self, rows: usize, n: usize, k: usize, dtype: DType) {
        let x = random(&mut self.rng, rows * k, 2.0);
        let (wg, wu) = (
            random(&mut self.rng, n * k, 0.2),
            random(&mut self.rng, n * k, 0.2),
        );
        let cpu = self.cpu;
        let xa = act(cpu, rows, k, &x);
        let (ga, ua) = (
            weight(cpu, dtype, &[n, k], &wg),
            weight(cpu, dtype, &[n, k], &wu),
        );
        let (mut g, mut u) = (cpu.alloc(rows * n).unwrap(), cpu.alloc(rows * n).unwrap());
        cpu.gate_up_swiglu(&xa, &ga, &ua, rows, 0, n, &mut g, &mut u)
            .unwrap();
        let want = read(cpu, &g, rows * n);
        let mut args = vec![
            Arg::Buf(encode(dtype, &wg)),
            Arg::Buf(encode(dtype, &wu)),
            Arg::Buf(vec![0; rows * n * 4]),
            int(n as i32),
            Arg::Buf(f32s(&x)),
            int(rows as i32),
            int(k as i32),
        ];
        let fused = self
            .launch_gemv(
                &format!("gemv_swiglu_{}", gpu_type(dtype)),
                &[n],
                rows,
                1,
                &mut args,
            )
            .map(|()| args[2].bytes().to_vec());
        // The unfused path: one GEMV launch over both weights, then the swiglu kernel.
        let two = self.gemv(dtype, &[wg, wu], &[n, n], k, &x);
        let unfused = match (&two[0], &two[1]) {
            (Ok(gb), Ok(ub)) => {
                let mut a = vec![
                    Arg::Buf(gb.clone()),
                    Arg::Buf(ub.clone()),
                    Arg::Scalar(((rows * n) as i64).to_le_bytes().to_vec()),
                ];
                let blocks = (rows * n).div_ceil(256).clamp(1, 65_535) as u32;
                self.emu
                    .launch("swiglu", [blocks, 1, 1], 256, &mut a)
                    .map(|()| a[0].bytes().to_vec())
            }
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        let label = format!("gemv_swiglu {dtype:?} rows={rows} n={n} k={k}");
        let name = format!("{} {label} = GEMV + swiglu, bitwise", self.label);
        self.report
            .check(name, matches!((&fused, &unfused), (Ok(f), Ok(u)) if f == u));
        self.compare(label, fused.map(|b| to_f32(&b)), &want, 1e-5);
    }

    fn elementwise(&mut self, len: usize) {
        let (g, u) = (
            random(&mut self.rng, len, 8.0),
            random(&mut self.rng, len, 8.0),
        );
        let cpu = self.cpu;
        for kernel in ["swiglu", "add"] {
            let (mut ga, ua) = (act(cpu, 1, len, &g), act(cpu, 1, len, &u));
            if kernel == "swiglu" {
                cpu.swiglu(&mut ga, &ua, len).unwrap();
            } else {
                cpu.add(&mut ga, &ua, len).unwrap();
            }
            let want = read(cpu, &ga, len);
            let mut args = vec![
                Arg::Buf(f32s(&g)),
                Arg::Buf(f32s(&u)),
                Arg::Scalar((len as i64).to_le_bytes().to_vec()),
            ];
            let blocks = len.div_ceil(256).clamp(1, 65_535) as u32;
            let got = self.emu.launch(kernel, [blocks, 1, 1], 256, &mut args);
            self.compare(
                format!("{kernel} len={len}"),
                got.map(|()| to_f32(args[0].bytes())),
                &want,
                1e-6,
            );
        }
    }

    /// Launch shapes a GPU refuses (no threads, more than 1024 threads a block, no blocks) are
    /// refused by the emulator too, with the shape named, and a launch after them runs.
    fn bad_shapes(&mut self) {
        for (grid, block) in [([1, 1, 1], 0), ([1, 1, 1], 1025), ([0, 1, 1], 32)] {
            let mut args = vec![
                Arg::Buf(f32s(&[1.0; 4])),
                Arg::Buf(f32s(&[2.0; 4])),
                Arg::Scalar(4i64.to_le_bytes().to_vec()),
            ];
            let name = format!("{} add refuses grid {grid:?} block {block}", self.label);
            let got = self.emu.launch("add", grid, block, &mut args);
            let refused = matches!(&got, Err(e) if e.contains("invalid launch shape"));
            self.report.check(name, refused);
        }
        self.elementwise(5);
    }

    fn argmax(&mut self, rows: usize, width: usize) {
        let mut logits = random(&mut self.rng, rows * width, 10.0);
        // Ties (the first wins), NaN (never wins), a row of NaN (0).
        if width > 8 {
            logits[3] = 100.0;
            logits[7] = 100.0;
            logits[1] = f32::NAN;
        }
        // A tie one thread sees in one unrolled round (slots 0 and 1) and one across rounds.
        if width > 3 * 8192 {
            logits[5 + 1024] = 200.0;
            logits[5] = 200.0;
            logits[5 + 8 * 1024] = 200.0;
        }
        if rows > 1 {
            logits[width..2 * width]
                .iter_mut()
                .for_each(|v| *v = f32::NAN);
        }
        let want: Vec<f32> = logits.chunks(width).map(|r| argmax(r) as f32).collect();
        let mut args = vec![
            Arg::Buf(f32s(&logits)),
            Arg::Buf(vec![0; rows * 4]),
            int(rows as i32),
            int(width as i32),
        ];
        let got = self.emu.launch(
            "argmax_rows",
            [rows as u32, 1, 1],
            cocoon_kernels::shapes::ARGMAX_THREADS as u32,
            &mut args,
        );
        let got = got.map(|()| {
            args[1]
                .bytes()
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect()
        });
        self.compare(format!("argmax rows={rows} width={width}"), got, &want, 0.0);
    }

    fn gather(&mut self, rows: usize, width: usize) {
        let x = random(&mut self.rng, rows * width, 2.0);
        let pick: Vec<i32> = (0..rows as i32).rev().step_by(2).collect();
        let want: Vec<f32> = pick
            .iter()
            .flat_map(|r| x[*r as usize * width..(*r as usize + 1) * width].to_vec())
            .collect();
        let mut args = vec![
            Arg::Buf(f32s(&x)),
            Arg::Buf(i32s(&pick)),
            Arg::Buf(vec![0; pick.len() * width * 4]),
            int(pick.len() as i32),
            int(width as i32),
        ];
        let got = self
            .emu
            .launch("gather_rows", [pick.len() as u32, 1, 1], 256, &mut args);
        self.compare(
            format!("gather_rows {}/{rows} width={width}", pick.len()),
            got.map(|()| to_f32(args[2].bytes())),
            &want,
            0.0,
        );
    }

    /// Two passes over sequences given as (positions already cached, new positions): the
    /// first only caches (RoPE) the old positions, the second caches and attends the new.
    /// RoPE with the write to the paged pool, then split-K attention, with the pool holding
    /// `kv` values; the CPU backend (an f32 pool) is the reference.
    fn attention(&mut self, shape: AttentionShape, seqs: &[(usize, usize)], kv: KvType) {
        let (q_dim, kv_dim, d) = (shape.q_dim(), shape.kv_dim(), shape.head_dim);
        let inv_freq: Vec<f32> = (0..d / 2)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / d as f32))
            .collect();
        // Tables: each sequence gets its own blocks, interleaved so that tables matter.
        let blocks: Vec<usize> = seqs
            .iter()
            .map(|(o, n)| (o + n).div_ceil(KV_BLOCK))
            .collect();
        let total_blocks: usize = blocks.iter().sum();
        let mut tables: Vec<Vec<u32>> = vec![Vec::new(); seqs.len()];
        let mut next = 0u32;
        for b in 0..*blocks.iter().max().unwrap_or(&0) {
            for (s, t) in tables.iter_mut().enumerate() {
                if b < blocks[s] {
                    t.push(total_blocks as u32 - 1 - next);
                    next += 1;
                }
            }
        }
        let cpu = self.cpu;
        let mut pool = cpu.new_pool(1, total_blocks, shape, KvType::F32).unwrap();
        let slots = total_blocks * KV_BLOCK;
        let mut k_pool = vec![0u8; slots * kv_dim * kv.size()];
        let mut v_pool = vec![0u8; slots * kv_dim * kv.size()];
        // A bf16 pool rounds keys and values to 8 significant bits: attention's relative
        // error grows to about 2⁻⁹ per value.
        let att_tol = match kv {
            KvType::F32 => 1e-4,
            KvType::BF16 => 1e-2,
        };
        let mut freq = [0f32; 256];
        freq[..inv_freq.len()].copy_from_slice(&inv_freq);
        let mut results = Vec::new();
        for pass in 0..2 {
            let rows_of = |s: usize| if pass == 0 { seqs[s].0 } else { seqs[s].1 };
            let first_of = |s: usize| if pass == 0 { 0 } else { seqs[s].0 };
            let mut batch = Batch::new();
            let (mut positions, mut row_table, mut flat) = (Vec::new(), Vec::new(), Vec::new());
            for (s, t) in tables.iter().enumerate() {
                let n = rows_of(s);
                if n == 0 {
                    continue;
                }
                let kind = if pass == 1 && n == 1 {
                    RowKind::Decode
                } else {
                    RowKind::Prompt
                };
                if kind == RowKind::Prompt && batch.rows() > batch.prompt_rows() {
                    continue; // prompt rows first: this layout is built so that it never happens
                }
                batch
                    .push(t, first_of(s), &vec![0; n], kind, Logits::None)
                    .unwrap();
                let start = flat.len() as i32;
                flat.extend(t.iter().map(|b| *b as i32));
                for j in 0..n {
                    positions.push((first_of(s) + j) as i32);
                    row_table.push(start);
                }
            }
            let rows = positions.len();
            if rows == 0 {
                continue;
            }
            cpu.stage(&mut pool, &batch).unwrap();
            let q = random(&mut self.rng, rows * q_dim, 2.0);
            let k = random(&mut self.rng, rows * kv_dim, 2.0);
            let v = random(&mut self.rng, rows * kv_dim, 2.0);
            let (mut qa, ka, va) = (
                act(cpu, rows, q_dim, &q),
                act(cpu, rows, kv_dim, &k),
                act(cpu, rows, kv_dim, &v),
            );
            cpu.rope_and_cache(&mut qa, &ka, &va, &mut pool, 0, shape, &inv_freq)
                .unwrap();
            let mut args = vec![
                Arg::Buf(f32s(&q)),
                Arg::Buf(f32s(&k)),
                Arg::Buf(f32s(&v)),
                Arg::Buf(std::mem::take(&mut k_pool)),
                Arg::Buf(std::mem::take(&mut v_pool)),
                int(rows as i32),
                Arg::Buf(i32s(&positions)),
                Arg::Buf(i32s(&row_table)),
                Arg::Buf(i32s(&flat)),
                int(shape.heads as i32),
                int(shape.kv_heads as i32),
                int(d as i32),
                Arg::Scalar(f32s(&freq)),
            ];
            let (gx, gy) = cocoon_kernels::shapes::rope_grid(
                cocoon_kernels::shapes::Heads {
                    heads: shape.heads,
                    kv_heads: shape.kv_heads,
                    head_dim: shape.head_dim,
                },
                rows,
            );
            let rope = self.emu.launch(
                kv.pick(["rope_cache_f32", "rope_cache_bf16"]),
                [gx, gy, 1],
                cocoon_kernels::shapes::ROPE_THREADS as u32,
                &mut args,
            );
            let mut args = args.into_iter();
            let q_rot = args.next().map(|a| to_f32(a.bytes())).unwrap_or_default();
            let _ = (args.next(), args.next());
            k_pool = args.next().map(|a| a.bytes().to_vec()).unwrap_or_default();
            v_pool = args.next().map(|a| a.bytes().to_vec()).unwrap_or_default();
            if let Err(e) = rope {
                results.push((
                    format!("rope_cache {kv:?} rows={rows}"),
                    Err(e),
                    Vec::new(),
                    1e-5,
                ));
                break;
            }
            let want_q = read(cpu, &qa, rows * q_dim);
            results.push((
                format!("rope_cache {kv:?} {shape:?} rows={rows}"),
                Ok(q_rot.clone()),
                want_q,
                1e-5,
            ));
            if pass == 0 {
                continue;
            }
            let mut out = cpu.alloc(rows * q_dim).unwrap();
            cpu.attention(&qa, &mut pool, 0, shape, &mut out).unwrap();
            let want = read(cpu, &out, rows * q_dim);
            let max_pos = *positions.iter().max().unwrap_or(&0) as usize;
            let chunks = split_grid_chunks(max_pos, slots);
            // As Gpu::attention: prompt rows on tensor cores where the pool and head allow,
            // the other rows split-K from `first` on, into one output.
            let as_u32 = |v: &[i32]| v.iter().map(|x| *x as u32).collect::<Vec<u32>>();
            let tiles = prefill_tiles(
                &as_u32(&positions),
                &as_u32(&row_table),
                batch.prompt_rows(),
            );
            let tensor_cores = kv == KvType::BF16 && prefill_head_dim(d) && !tiles.is_empty();
            let first = if tensor_cores { batch.prompt_rows() } else { 0 };
            let mut out_bytes = vec![0u8; rows * q_dim * 4];
            let mut got = Ok(());
            if tensor_cores {
                let mut pre = vec![
                    Arg::Buf(f32s(&q_rot)),
                    Arg::Buf(std::mem::take(&mut k_pool)),
                    Arg::Buf(std::mem::take(&mut v_pool)),
                    Arg::Buf(out_bytes),
                    Arg::Buf(i32s(&positions)),
                    Arg::Buf(i32s(&row_table)),
                    Arg::Buf(i32s(&flat)),
                    Arg::Buf(i32s(&tiles)),
                    int(shape.heads as i32),
                    int(shape.kv_heads as i32),
                    float(1.0 / (d as f32).sqrt()),
                ];
                let name = if d == 64 {
                    "attn_prefill_d64"
                } else {
                    "attn_prefill_d128"
                };
                let grid = [shape.heads as u32, (tiles.len() / 2) as u32, 1];
                got = self.emu.launch(name, grid, PF_THREADS as u32, &mut pre);
                let mut pre = pre.into_iter().skip(1);
                k_pool = pre.next().map(|a| a.bytes().to_vec()).unwrap_or_default();
                v_pool = pre.next().map(|a| a.bytes().to_vec()).unwrap_or_default();
                out_bytes = pre.next().map(|a| a.bytes().to_vec()).unwrap_or_default();
            }
            if got.is_ok() && rows > first {
                let mut split = vec![
                    Arg::Buf(f32s(&q_rot)),
                    Arg::Buf(std::mem::take(&mut k_pool)),
                    Arg::Buf(std::mem::take(&mut v_pool)),
                    Arg::Buf(vec![0; rows * shape.heads * chunks * (d + 2) * 4]),
                    Arg::Buf(std::mem::take(&mut out_bytes)),
                    Arg::Buf(i32s(&positions)),
                    Arg::Buf(i32s(&row_table)),
                    Arg::Buf(i32s(&flat)),
                    int(first as i32),
                    int(shape.heads as i32),
                    int(shape.kv_heads as i32),
                    int(d as i32),
                    float(1.0 / (d as f32).sqrt()),
                ];
                let grid = [shape.heads as u32, chunks as u32, (rows - first) as u32];
                got = self
                    .emu
                    .launch(
                        kv.pick(["attn_split_f32", "attn_split_bf16"]),
                        grid,
                        32 * ATT_WARPS as u32,
                        &mut split,
                    )
                    .and_then(|()| {
                        // One chunk: the split kernel wrote the output (as Gpu::attention).
                        out_bytes = split[4].bytes().to_vec();
                        if chunks == 1 {
                            return Ok(());
                        }
                        let mut comb = vec![
                            Arg::Buf(split[3].bytes().to_vec()),
                            Arg::Buf(std::mem::take(&mut out_bytes)),
                            int(first as i32),
                            int(chunks as i32),
                            int(d as i32),
                        ];
                        let r = self.emu.launch(
                            "attn_combine",
                            [shape.heads as u32, (rows - first) as u32, 1],
                            128,
                            &mut comb,
                        );
                        out_bytes = comb[1].bytes().to_vec();
                        r
                    });
                k_pool = split[1].bytes().to_vec();
                v_pool = split[2].bytes().to_vec();
            }
            let got = got.map(|()| to_f32(&out_bytes));
            let chunks = if rows > first { chunks } else { 0 };
            let path = if tensor_cores {
                format!("prefill tiles={} + ", tiles.len() / 2)
            } else {
                String::new()
            };
            results.push((
                format!("attention {kv:?} {shape:?} rows={rows} {path}chunks={chunks}"),
                got,
                want,
                att_tol,
            ));
        }
        for (name, got, want, tol) in results {
            self.compare(name, got, &want, tol);
        }
    }

    fn all(&mut self, small: bool) {
        self.every_tile = small;
        // (rows, prompt rows, weights' rows, k): odd sizes, tails of the 4-row groups and of
        // the 4-chunk loop, Q/K/V and gate/up in one launch, prompt and decode rows together.
        let shapes: &[(usize, usize, &[usize], usize)] = if small {
            &[
                (1, 0, &[37], 33),
                (3, 3, &[64], 40),
                (6, 2, &[24, 8, 8], 40),
                (2, 0, &[8, 4], 1032),
                (5, 5, &[20], 35),
                (70, 70, &[72], 48),
                // GEMM split over k (64 columns a split; the last one partial, and odd k).
                (4, 4, &[40], 200),
                (3, 3, &[24], 131),
                // Two and four outputs a warp (≥ 8 and ≥ 16 decode rows), odd widths: the last
                // pair or quad part empty; k = 1032 takes the 4-chunk loop and its tail.
                (9, 0, &[37, 11, 5], 1032),
                (17, 0, &[42, 9], 1032),
            ]
        } else {
            &[
                (1, 0, &[576], 576),
                (1, 0, &[576, 192, 192], 576),
                (1, 0, &[256, 64, 64], 2048),
                (1, 0, &[37], 33),
                (3, 3, &[100], 40),
                (5, 5, &[201], 577),
                (9, 0, &[96, 96], 576),
                (7, 4, &[96, 32, 32], 1024),
                (64, 64, &[136], 192),
                (130, 130, &[72], 96),
                (19, 3, &[130, 70], 264),
                (9, 0, &[37, 11, 5], 33),
                (9, 0, &[37, 11, 5], 1032),
                (17, 0, &[42, 9], 1032),
            ]
        };
        for &(rows, prompt_rows, ns, k) in shapes {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                self.matmul(rows, ns, k, dtype, 0);
                if dtype != DType::F32 && prompt_rows > 0 {
                    self.matmul(rows, ns, k, dtype, prompt_rows);
                }
            }
        }
        for &(rows, n, k) in if small {
            &[(5, 40, 64)][..]
        } else {
            &[(1, 200, 576), (6, 200, 264), (3, 37, 33)][..]
        } {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                self.gemv_swiglu(rows, n, k, dtype);
            }
        }
        let norms: &[(usize, usize)] = if small {
            &[(2, 77)]
        } else {
            // 16 500 columns: wider than the registers hold (the strided path).
            &[(1, 576), (3, 2048), (5, 77), (1, 16_500)]
        };
        for &(rows, width) in norms {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                self.norm(rows, width, dtype);
            }
        }
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            self.embed(
                if small { 50 } else { 1000 },
                if small { 24 } else { 576 },
                dtype,
            );
        }
        for len in if small {
            vec![300]
        } else {
            vec![1, 255, 70_000]
        } {
            self.elementwise(len);
        }
        for (rows, width) in if small {
            vec![(3, 300)]
        } else {
            vec![(1, 49_152), (4, 1000), (2, 33)]
        } {
            self.argmax(rows, width);
        }
        self.gather(if small { 5 } else { 9 }, if small { 40 } else { 576 });
        self.bad_shapes();
        let attn: Vec<(AttentionShape, Vec<(usize, usize)>)> = if small {
            vec![
                (
                    AttentionShape {
                        heads: 2,
                        kv_heads: 1,
                        head_dim: 16,
                    },
                    vec![(3, 5), (0, 4)],
                ),
                (
                    // Two prompts, one across a tile and a key block, after 3 cached positions.
                    AttentionShape {
                        heads: 2,
                        kv_heads: 1,
                        head_dim: 64,
                    },
                    vec![(3, 70), (0, 5)],
                ),
            ]
        } else {
            vec![
                (
                    AttentionShape {
                        heads: 4,
                        kv_heads: 2,
                        head_dim: 64,
                    },
                    vec![(0, 37), (20, 1)],
                ),
                (
                    AttentionShape {
                        heads: 3,
                        kv_heads: 1,
                        head_dim: 64,
                    },
                    vec![(290, 3), (5, 1)],
                ),
                (
                    AttentionShape {
                        heads: 2,
                        kv_heads: 2,
                        head_dim: 256,
                    },
                    vec![(0, 9)],
                ),
                (
                    // 128-wide heads: a 130-row prompt chunk after 100 cached positions (three
                    // tiles, four key blocks) beside a decode row.
                    AttentionShape {
                        heads: 4,
                        kv_heads: 1,
                        head_dim: 128,
                    },
                    vec![(100, 130), (0, 1)],
                ),
                (
                    AttentionShape {
                        heads: 4,
                        kv_heads: 4,
                        head_dim: 6,
                    },
                    vec![(600, 1), (16, 1)],
                ),
            ]
        };
        // Each shape with an f32 pool, and with a bf16 pool in the small set and where the
        // head width takes the tensor-core prefill (64, 128) in the large one.
        for (shape, seqs) in attn {
            self.attention(shape, &seqs, KvType::F32);
            if small || prefill_head_dim(shape.head_dim) {
                self.attention(shape, &seqs, KvType::BF16);
            }
        }
    }
}

fn main() {
    let root = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let kernels = std::env::var_os("COCOON_EMU_KERNELS")
        .map_or_else(|| root.join("kernels/cuda"), PathBuf::from);
    let emu_dir = root.join("kernels/emu");
    let out = std::env::var_os("COCOON_EMU_OUT")
        .map_or_else(|| root.join("target/cuda-emu"), PathBuf::from);
    let cache = std::env::var_os("COCOON_EMU_CACHE")
        .map_or_else(|| root.join("target/cuda-emu/objects"), PathBuf::from);
    println!("cuda-emu: kernels from {}", kernels.display());
    let cpu = CpuBackend::new(1).unwrap_or_else(|e| {
        println!("cuda-emu: {e}");
        std::process::exit(2)
    });
    // COCOON_EMU_SHAPES=small: the small shapes only, on both builds (a quick look at a
    // changed or deliberately broken kernel).
    let quick = std::env::var("COCOON_EMU_SHAPES").is_ok_and(|v| v == "small");
    // COCOON_EMU_FAIL_FAST=1: the first failed check ends the run (exit 1, with the summary
    // line), for a quick verdict on a deliberately broken kernel.
    let fail_fast = std::env::var("COCOON_EMU_FAIL_FAST").is_ok_and(|v| v == "1");
    let mut report = Report::default();
    let mut passed_builds = 0usize;
    let started = std::time::Instant::now();
    let builds = [
        (Build::Plain, "emu"),
        (Build::Tsan, "emu+tsan"),
        (Build::Asan, "emu+asan"),
    ];
    // COCOON_EMU_BUILDS=plain,tsan,asan (default all): which builds run.
    let wanted = std::env::var("COCOON_EMU_BUILDS").unwrap_or_else(|_| "plain,tsan,asan".into());
    let builds: Vec<(Build, &str)> = builds
        .into_iter()
        .filter(|(kind, _)| wanted.split(',').any(|w| w.trim() == kind.name()))
        .collect();
    if builds.is_empty() {
        println!("cuda-emu: COCOON_EMU_BUILDS={wanted:?} names no build (plain, tsan, asan)");
        std::process::exit(2);
    }
    // The builds run side by side, each compiling and then checking on its own thread (an
    // emulator process is one host thread): their lines interleave, each names its build.
    let results: Vec<(Report, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = builds
            .iter()
            .map(|&(kind, label)| {
                let (kernels, emu_dir, out, cache, cpu) = (&kernels, &emu_dir, &out, &cache, &cpu);
                scope.spawn(move || {
                    let mut report = Report {
                        stop_at_first_failure: fail_fast.then_some("cuda-emu"),
                        ..Report::default()
                    };
                    match build(kernels, emu_dir, out, cache, kind) {
                        Err(e) => {
                            println!("{label}: {e}");
                            report.failures += 1;
                            (report, false)
                        }
                        Ok(exe) => {
                            let mut emu = Emu {
                                exe,
                                proc: None,
                                exact: kind == Build::Asan,
                            };
                            let mut checks = Checks {
                                cpu,
                                emu: &mut emu,
                                report: &mut report,
                                rng: Rng(0x5eed),
                                label,
                                every_tile: true,
                            };
                            checks.all(kind != Build::Plain || quick);
                            (report, true)
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a build's checks panicked"))
            .collect()
    });
    for (r, built) in results {
        report.failures += r.failures;
        report.kernels.extend(r.kernels);
        passed_builds += usize::from(built);
    }
    let total = report.kernels.len() + (builds.len() - passed_builds);
    let failed = report.failures;
    println!(
        "cuda-emu: wall time {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "cuda-emu: {} passed, {failed} failed",
        total.saturating_sub(failed)
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
