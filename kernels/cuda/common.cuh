// common.cuh — definitions shared by every kernel file. The Rust side prepends this text to each
// .cu file before NVRTC compiles it, so the sources need no include paths and no CUDA headers:
// BF16 and F16 values travel as raw 16-bit patterns and are widened with bit operations or one
// PTX conversion instruction.
//
// Conventions of every kernel here:
//   * activations are f32, row-major [rows, width];
//   * weights keep their stored dtype (f32, bf16 or f16), row-major [n, k];
//   * reductions run in a fixed order (warp shuffles, then shared memory read in index order),
//     never with atomics, so that two runs give bit-identical results.

typedef unsigned short u16;
typedef unsigned int u32;

#define WARP 32
#define KV_BLOCK 8    // positions per block of the paged KV pool (KV_BLOCK in runtime/src/backend/batch.rs)
#define FULL_MASK 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)
#define QNAN __int_as_float(0x7fc00000)

// Programmatic dependent launch (sm_90+, kernels/src/launch.rs): a kernel may start while the
// kernel before it on the stream is still running. `start_dependents` lets the next kernel
// start launching; `stream_wait` waits until the previous kernel has finished and its writes
// are visible. Before sm_90, and in the emulator (kernels run one after another), both do
// nothing.
__device__ __forceinline__ void start_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void stream_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Every kernel begins with this, or with its two halves around reads of memory no kernel
// writes (the weights, see prefetch_row), so no global memory is touched out of stream order.
// Kernels of many waves (the prefill GEMM and attention) call stream_wait alone: there the
// next kernel's blocks, started early, would wait on SMs this kernel's later blocks need; the
// next kernel then starts as this one's blocks exit.
__device__ __forceinline__ void stream_order() {
    start_dependents();
    stream_wait();
}

// Asks L2 for the first PREFETCH_ROW_BYTES of a weight row, one 128-byte line a lane of the
// calling warp. Called between start_dependents and stream_wait, it makes memory stream the
// row while the previous kernel (a norm, RoPE, attention: too short to use the bandwidth)
// finishes. A prefetch is a hint and changes no value. Skipped before sm_90 (no early start,
// nothing to overlap); the emulator checks that every line asked for lies inside a buffer of
// the launch.
// COCOON_NO_WEIGHT_PREFETCH (kernels/src/nvrtc.rs `KernelOptions`) leaves it out, so that
// ci/gpu-check can time decode with and without it in one run.
#ifdef COCOON_NO_WEIGHT_PREFETCH
#define PREFETCH_ROW_BYTES 0
#else
#define PREFETCH_ROW_BYTES (WARP * 128)
#endif
__device__ __forceinline__ void prefetch_row(const void* row, long long bytes) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
    const long long offset = (long long)(threadIdx.x % WARP) * 128;
    if (offset < bytes && offset < PREFETCH_ROW_BYTES)
        asm volatile("prefetch.global.L2 [%0];" ::"l"((const char*)row + offset));
#endif
}

// bf16 → f32: the bf16 pattern is the top half of the f32 pattern.
__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// f16 → f32 through the hardware conversion.
__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Two f32 → packed bf16x2 (round to nearest even); `lo` goes to the low half.
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Two f32 → packed f16x2 (round to nearest even); `lo` goes to the low half.
__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Shared-memory address of a `__shared__` object, as the PTX instructions below take it.
__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// 16 bytes from global to shared memory without passing through registers (sm_80+): the
// first `src_bytes` (0 or 16) from `src`, zeros for the rest. Lands only after a wait below.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], %2, %3;" ::"r"(dst), "l"(src), "n"(16),
                 "r"(src_bytes));
}
// Closes the group of the copies issued since the last commit (an empty group is allowed).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Staging of the prefill GEMMs' tiles (gemm.cu, gemm_sm90.cu), X: [m, k] f32 and W: [n, k]
// 16-bit, both row-major; columns from `ke` on (the end of a split of k) read as zeros.
// Four consecutive activations of row `row` from column `col` into v, zeros past row m or
// column ke: with `vec` (k % 4 == 0, X 16-byte aligned) one 128-bit load, the four wholly
// inside or wholly outside; else one at a time.
__device__ __forceinline__ void load_x4(float v[4], const float* X, int row, int col, int m, int k,
                                        int ke, bool vec) {
    if (vec) {
        float4 f = {0.0f, 0.0f, 0.0f, 0.0f};
        if (row < m && col < ke) f = *reinterpret_cast<const float4*>(X + (long long)row * k + col);
        v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = row < m && col + e < ke ? X[(long long)row * k + col + e] : 0.0f;
    }
}

// Eight weights of row `row` from column `col` into shared memory at d (16 bytes), zeros past
// row n or column ke: with `vec` (k % 8 == 0, W 16-byte aligned: the eight wholly inside or
// outside) by one cp.async, landing at the next wait; else element by element, at once.
__device__ __forceinline__ void stage_w8(u32* d, const u16* W, int row, int col, int n, int k, int ke,
                                         bool vec) {
    const bool inside = row < n && col < ke;
    const u16* src = inside ? W + (long long)row * k + col : W;
    if (vec) {
        cp_async16(smem_addr(d), src, inside ? 16 : 0);
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int c = col + 2 * e;
            const u32 lo = row < n && c < ke ? src[2 * e] : 0;
            const u32 hi = row < n && c + 1 < ke ? src[2 * e + 1] : 0;
            d[e] = lo | hi << 16;
        }
    }
}

// Four 8×8 matrices of 16-bit elements from shared memory into mma fragments: lanes 8i..8i+7
// give the addresses of the 8 rows of matrix i; register i of lane l receives row l / 4,
// elements 2 (l % 4) and 2 (l % 4) + 1 of matrix i (PTX ISA, "ldmatrix").
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// Four 8×8 matrices, transposed (".trans"): register i of lane l receives elements
// (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4) of matrix i, the first in the low half.
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// Weight element types. `Weight<T>::get(p, i)` widens element i to f32; `load8(p, out)` reads
// eight consecutive elements with 128-bit loads (p must be 16-byte aligned).
struct F32 { typedef float Storage; };
struct BF16 { typedef u16 Storage; };
struct F16 { typedef u16 Storage; };

template <typename T> struct Weight;

template <> struct Weight<F32> {
    __device__ __forceinline__ static float get(const float* p, long long i) { return p[i]; }
    __device__ __forceinline__ static void load8(const float* p, float out[8]) {
        const float4 a = reinterpret_cast<const float4*>(p)[0];
        const float4 b = reinterpret_cast<const float4*>(p)[1];
        out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
        out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
    }
};

template <> struct Weight<BF16> {
    __device__ __forceinline__ static float get(const u16* p, long long i) { return bf16_to_f32(p[i]); }
    __device__ __forceinline__ static void load8(const u16* p, float out[8]) {
        const uint4 v = *reinterpret_cast<const uint4*>(p);
        const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            out[2 * j] = __uint_as_float(w[j] << 16);
            out[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
        }
    }
};

template <> struct Weight<F16> {
    __device__ __forceinline__ static float get(const u16* p, long long i) { return f16_to_f32(p[i]); }
    __device__ __forceinline__ static void load8(const u16* p, float out[8]) {
        const uint4 v = *reinterpret_cast<const uint4*>(p);
        const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            out[2 * j] = f16_to_f32((u16)(w[j] & 0xffffu));
            out[2 * j + 1] = f16_to_f32((u16)(w[j] >> 16));
        }
    }
};

// KV cache element types: f32, or bf16 for the pool of a BF16/F16 model (half the memory and
// the bandwidth of attention). `Kv<T>::get(p, i)` widens element i to f32; `put(p, i, v)`
// stores v rounded to nearest even.
template <typename T> struct Kv;

template <> struct Kv<F32> {
    typedef float Storage;
    __device__ __forceinline__ static float get(const float* p, long long i) { return p[i]; }
    __device__ __forceinline__ static void put(float* p, long long i, float v) { p[i] = v; }
};

template <> struct Kv<BF16> {
    typedef u16 Storage;
    __device__ __forceinline__ static float get(const u16* p, long long i) { return bf16_to_f32(p[i]); }
    __device__ __forceinline__ static void put(u16* p, long long i, float v) {
        p[i] = (u16)(pack_bf16x2(v, 0.0f) & 0xffffu);
    }
};

// Tensor-core products of 16-bit inputs: `pack` rounds two f32 to the type (`lo` in the low
// half), `run` is D = A·B + C for one mma.sync.m16n8k16 with f32 accumulators (fragment
// layouts in gemm.cu). Not `volatile`: an mma touches only registers, so the compiler may move
// the next step's `ldmatrix` loads ahead of it.
template <typename T> struct Mma;

template <> struct Mma<BF16> {
    __device__ __forceinline__ static u32 pack(float lo, float hi) { return pack_bf16x2(lo, hi); }
    __device__ __forceinline__ static void run(float c[4], const u32 a[4], const u32 b[2]) {
        asm(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

template <> struct Mma<F16> {
    __device__ __forceinline__ static u32 pack(float lo, float hi) { return pack_f16x2(lo, hi); }
    __device__ __forceinline__ static void run(float c[4], const u32 a[4], const u32 b[2]) {
        asm(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024): each warp reduces
// with shuffles, warp 0 adds the warp sums in index order. Every thread gets the total.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x / WARP) ? partial[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}
