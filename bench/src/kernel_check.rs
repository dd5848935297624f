//! Kernel checks shared by `gpu-check` (the CUDA backend) and `cuda-emu` (the kernels under
//! CPU emulation): random inputs, uploads through the Backend trait, and relative-error
//! comparisons against the CPU backend.

use cocoon_runtime::backend::{
    blocks_for, AttentionShape, Backend, Batch, HostTensor, KvType, Logits, RowKind,
};
use cocoon_runtime::model::weights::DType;
use cocoon_tests::Rng;
use serde_json::{json, Value};

/// `n` values uniform in [-scale/2, scale/2).
pub fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| 0.5 * scale * rng.next_f32()).collect()
}
/// The bytes of `values` stored as `dtype`.
pub fn encode(dtype: DType, values: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        DType::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
    }
}

/// A weight of `shape` holding `values` stored as `dtype`.
pub fn weight<B: Backend>(be: &B, dtype: DType, shape: &[usize], values: &[f32]) -> B::Weight {
    be.upload(HostTensor {
        dtype,
        shape,
        bytes: &encode(dtype, values),
    })
    .unwrap()
}

/// A scratch pool whose staged rows are `ids` (one sequence at positions 0..).
pub fn staged<B: Backend>(be: &B, ids: &[u32]) -> B::Pool {
    let shape = AttentionShape {
        heads: 1,
        kv_heads: 1,
        head_dim: 2,
    };
    let blocks = blocks_for(ids.len());
    let mut pool = be.new_pool(1, blocks, shape, KvType::F32).unwrap();
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut batch = Batch::new();
    batch
        .push(&table, 0, ids, RowKind::Prompt, Logits::None)
        .unwrap();
    be.stage(&mut pool, &batch).unwrap();
    pool
}

/// An activation buffer holding `values` (`rows × width`): uploaded as an f32 table and
/// gathered with `embed`, the one way the Backend trait takes host activations.
pub fn act<B: Backend>(be: &B, rows: usize, width: usize, values: &[f32]) -> B::Buf {
    let table = weight(be, DType::F32, &[rows, width], values);
    let mut out = be.alloc(rows * width).unwrap();
    let ids: Vec<u32> = (0..rows as u32).collect();
    be.embed(&table, &staged(be, &ids), &mut out).unwrap();
    out
}

/// The first `len` values of a buffer.
pub fn read<B: Backend>(be: &B, x: &B::Buf, len: usize) -> Vec<f32> {
    be.read_rows(x, len, 0, 1).unwrap()
}

/// Comparisons of kernels against the CPU backend.
#[derive(Default)]
pub struct Report {
    /// Every comparison, as JSON.
    pub kernels: Vec<Value>,
    /// How many failed.
    pub failures: usize,
    /// When set, the first failed check ends the process (exit 1) after printing
    /// `<this>: N passed, M failed`: a quick verdict on a deliberately broken kernel.
    pub stop_at_first_failure: Option<&'static str>,
}

impl Report {
    /// Compares `got` with `want`: ‖got − want‖ / ‖want‖ ≤ `tol`, every value finite; prints
    /// one line and records it.
    pub fn compare(&mut self, name: String, got: &[f32], want: &[f32], tol: f32) {
        let mut max_abs = 0f32;
        let (mut diff2, mut ref2) = (0f64, 0f64);
        let mut finite = got.len() == want.len();
        for (g, w) in got.iter().zip(want) {
            finite &= g.is_finite();
            max_abs = max_abs.max((g - w).abs());
            diff2 += f64::from(g - w).powi(2);
            ref2 += f64::from(*w).powi(2);
        }
        let rel = (diff2 / ref2.max(1e-30)).sqrt() as f32;
        let pass = finite && rel <= tol;
        if !pass {
            self.failures += 1;
        }
        println!(
            "{:<58} rel {rel:.2e} max_abs {max_abs:.2e} tol {tol:.0e} {}",
            name,
            if pass { "ok" } else { "FAIL" }
        );
        self.kernels.push(json!({"name": name, "max_abs_err": max_abs, "rel_err": rel, "tolerance": tol, "pass": pass}));
        self.after(pass);
    }

    /// Records a check that could not run (`error` says why) as failed: prints one line.
    pub fn fail(&mut self, name: String, error: &str) {
        println!("{name:<58} FAIL: {error}");
        self.failures += 1;
        self.kernels
            .push(json!({"name": name, "pass": false, "error": error}));
        self.after(false);
    }

    fn after(&self, pass: bool) {
        if let (false, Some(program)) = (pass, self.stop_at_first_failure) {
            println!("{program}: stopped at the first failure");
            let passed = self.kernels.len() - self.failures;
            println!("{program}: {passed} passed, {} failed", self.failures);
            std::process::exit(1);
        }
    }

    /// Records a check that holds or not (a bitwise equality): prints one line and records it.
    pub fn check(&mut self, name: String, pass: bool) {
        if !pass {
            self.failures += 1;
        }
        println!("{name:<58} {}", if pass { "ok" } else { "FAIL" });
        self.kernels.push(json!({"name": name, "pass": pass}));
        self.after(pass);
    }
}
