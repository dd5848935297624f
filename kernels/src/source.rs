//! The CUDA C sources, embedded in the binary, and the kernels each one defines.

use sha2::{Digest, Sha256};

/// Definitions shared by every source (`cuda/common.cuh`), prepended to each before compiling.
pub const PRELUDE: &str = include_str!("../cuda/common.cuh");

/// One `.cu` file: an op family.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    /// File name under `kernels/cuda/`.
    pub file: &'static str,
    /// Its text.
    pub text: &'static str,
    /// The `extern "C"` kernels it defines (checked at compile time through NVRTC name
    /// expressions: a name missing from the source fails the compilation).
    pub kernels: &'static [&'static str],
}

impl Source {
    /// The program NVRTC compiles: the prelude, then the file, with `#line` so that NVRTC's
    /// messages name the file's own lines.
    pub fn program(&self) -> String {
        format!("{PRELUDE}\n#line 1 \"{}\"\n{}", self.file, self.text)
    }

    /// SHA-256 of [`Source::program`], hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.program().as_bytes()))
    }
}

/// Every source of the runtime.
pub const SOURCES: &[Source] = &[
    Source {
        file: "embedding.cu",
        text: include_str!("../cuda/embedding.cu"),
        kernels: &["embed_f32", "embed_bf16", "embed_f16", "gather_rows"],
    },
    Source {
        file: "norm.cu",
        text: include_str!("../cuda/norm.cu"),
        kernels: &[
            "rms_norm_f32",
            "rms_norm_bf16",
            "rms_norm_f16",
            "add_rms_norm_f32",
            "add_rms_norm_bf16",
            "add_rms_norm_f16",
        ],
    },
    Source {
        file: "gemv.cu",
        text: include_str!("../cuda/gemv.cu"),
        kernels: &[
            "gemv_f32",
            "gemv_bf16",
            "gemv_f16",
            "gemv2_f32",
            "gemv2_bf16",
            "gemv2_f16",
            "gemv4_f32",
            "gemv4_bf16",
            "gemv4_f16",
            "gemv_swiglu_f32",
            "gemv_swiglu_bf16",
            "gemv_swiglu_f16",
        ],
    },
    Source {
        file: "gemm.cu",
        text: include_str!("../cuda/gemm.cu"),
        kernels: &[
            "gemm_64x64_bf16",
            "gemm_64x64_f16",
            "gemm_64x128_bf16",
            "gemm_64x128_f16",
            "gemm_128x128_bf16",
            "gemm_128x128_f16",
            "gemm_sum_splits",
        ],
    },
    Source {
        file: "gemm_sm90.cu",
        text: include_str!("../cuda/gemm_sm90.cu"),
        kernels: &[
            "gemm_wg_64x128_bf16",
            "gemm_wg_64x128_f16",
            "gemm_wg_128x128_bf16",
            "gemm_wg_128x128_f16",
        ],
    },
    Source {
        file: "rope.cu",
        text: include_str!("../cuda/rope.cu"),
        kernels: &["rope_cache_f32", "rope_cache_bf16"],
    },
    Source {
        file: "attention.cu",
        text: include_str!("../cuda/attention.cu"),
        kernels: &["attn_split_f32", "attn_split_bf16", "attn_combine"],
    },
    Source {
        file: "attention_prefill.cu",
        text: include_str!("../cuda/attention_prefill.cu"),
        kernels: &["attn_prefill_d64", "attn_prefill_d128"],
    },
    Source {
        file: "swiglu.cu",
        text: include_str!("../cuda/swiglu.cu"),
        kernels: &["swiglu"],
    },
    Source {
        file: "residual.cu",
        text: include_str!("../cuda/residual.cu"),
        kernels: &["add"],
    },
    Source {
        file: "argmax.cu",
        text: include_str!("../cuda/argmax.cu"),
        kernels: &["argmax_rows"],
    },
];

/// The value of `#define NAME value` in a source or the prelude, if any.
pub fn define(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("#define") && words.next() == Some(name))
            .then(|| words.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cu_file_is_listed_once() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/cuda");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SOURCES.iter().map(|s| s.file.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }

    #[test]
    fn kernel_names_are_unique_and_appear_in_their_source() {
        let mut all: Vec<&str> = SOURCES
            .iter()
            .flat_map(|s| s.kernels.iter().copied())
            .collect();
        for s in SOURCES {
            for k in s.kernels {
                // Entry points are written out, made by a `NAME_##S` macro, or named whole as
                // a macro's first argument (`ENTRY(NAME, ...)`).
                let stem = k.rsplit_once('_').map_or(*k, |(a, _)| a);
                assert!(
                    s.text.contains(&format!("{k}("))
                        || s.text.contains(&format!("{stem}_##"))
                        || s.text.contains(&format!("({k},")),
                    "{k} not in {}",
                    s.file
                );
            }
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn every_kernel_begins_by_keeping_stream_order() {
        // Launched with programmatic dependent launch, a kernel that touched memory before
        // stream_order() (or stream_wait()) could read what the previous kernel has not yet
        // written. The one exception: start_dependents(), then only prefetch_* calls (weights,
        // which no kernel writes), then stream_wait().
        for s in SOURCES {
            let mut entries = 0;
            for (i, _) in s.text.match_indices("extern \"C\" __global__") {
                let body = &s.text[i..];
                let open = body.find('{').unwrap();
                let mut statements = body[open + 1..]
                    .split(';')
                    .map(|t| t.trim_start_matches(|c: char| c.is_whitespace() || c == '\\'));
                let first = statements.next().unwrap();
                if first == "start_dependents()" {
                    let waits = statements
                        .find(|t| !t.starts_with("prefetch_"))
                        .is_some_and(|t| t == "stream_wait()");
                    assert!(waits, "a kernel of {} reads before stream_wait()", s.file);
                } else {
                    assert!(
                        first == "stream_order()" || first == "stream_wait()",
                        "a kernel of {} begins with {first}",
                        s.file
                    );
                }
                entries += 1;
            }
            assert!(entries > 0, "{} has no entry point", s.file);
        }
    }

    #[test]
    fn program_hash_changes_with_the_text() {
        let a = SOURCES[0];
        let mut b = a;
        b.text = "// changed\n";
        assert_ne!(a.sha256(), b.sha256());
        assert_eq!(a.sha256(), SOURCES[0].sha256());
    }

    #[test]
    fn define_reads_integer_macros() {
        assert_eq!(define("#define A 4\n#define B (A + 1)\n", "A"), Some(4));
        assert_eq!(define("#define B (A + 1)\n", "B"), None);
        assert_eq!(define("", "A"), None);
    }
}
