// gemm.cu — tensor-core matrix product for prefill, BF16 or F16 weights, F32 accumulation.
//
//   Y[i, j] = Σ_c X[i, c] · W[j, c]        X: [m, k] f32, W: [n, k] bf16/f16, Y: [m, n] f32
//
// X is rounded to the weight's 16-bit type as it is staged into shared memory (as every
// BF16 inference engine does for its matrix units); products accumulate in f32.
//
// One kernel template, instantiated for a few tile shapes (GEMM_ENTRY below; the launch
// wrapper picks one per problem, kernels/src/shapes.rs `gemm_plan`). Where k is long the sum
// over k is split (split-K, blockIdx.z): each split writes its partial products to its own
// slice of a workspace and gemm_sum_splits adds the slices in order. The split width depends
// on k alone, never on the number of rows, so a row's bits do not depend on its batch. A block computes a BM × BN
// tile of Y with WM × WN warps, each warp a (BM / WM) × (BN / WN) sub-tile made of
// `mma.sync.m16n8k16` tiles. The k dimension is walked GEMM_BK = 32 columns at a time, as a
// pipeline (sm_80 and later):
//   * W tiles stream into a ring of STAGES shared buffers with `cp.async` (16 bytes a copy,
//     no registers; out-of-range chunks zero-filled), STAGES − 1 tiles ahead of the math;
//   * X tiles (f32, converted to 16 bits on the way) are read into registers one tile ahead,
//     so their global loads are in flight during the current tile's mma, and stored into a
//     double buffer after it;
//   * fragments come out of shared memory with `ldmatrix.x4` (one instruction per 16 × 16 A
//     tile or per pair of 8-column B tiles).
// One `__syncthreads()` per tile orders it all: after it, tile t's copies and stores are
// visible and every warp is done with tile t − 1, whose buffers the refills then reuse.
// Shared rows are padded to 40 halves (80 bytes) so that the 8 row addresses of an `ldmatrix`
// phase fall in distinct bank groups. Rows whose width k is not a multiple of 8 (or unaligned
// pointers) take the same pipeline with element-wise staging instead of the 16-byte copies.
// Each output element is written by exactly one thread after the whole k loop: deterministic.
// Every tile shape gives every element the same sequence of mma over k (16 columns at a time,
// in order), so the shapes agree bit for bit and the choice depends on nothing but speed.
//
// Fragment layout of m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with
// g = lane / 4 and t = lane % 4:
//   A (row-major 16×16): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B (col-major 16×8):  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]   (= W[g][2t..] — W is k-contiguous)
//   C (16×8 f32):        c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// so the A tile is the four 8×8 matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7,
// k 8-15), (rows 8-15, k 8-15) of one ldmatrix.x4, and two B tiles j, j+1 are the matrices
// (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) of W's rows.

#define GEMM_BK 32
#define GEMM_LD (GEMM_BK + 8)          // padded row, in 16-bit elements
#define GEMM_LD32 (GEMM_LD / 2)        // the same, in 32-bit words

// A tile shape: BM × BN outputs a block, WM × WN warps, STAGES W tiles in the cp.async ring.
template <int BM_, int BN_, int WM_, int WN_, int STAGES_>
struct GemmShape {
    static constexpr int BM = BM_, BN = BN_, STAGES = STAGES_;
    static constexpr int THREADS = WM_ * WN_ * WARP;
    static constexpr int TM = BM / WM_, TN = BN / WN_;  // a warp's sub-tile
    static constexpr int MI = TM / 16, NJ = TN / 8;     // its mma tiles
    static constexpr int XS = BM * 8 / THREADS;         // float4 of an X tile a thread stages
    static constexpr int WS = BN * 4 / THREADS;         // 16-byte W chunks a thread copies
    static constexpr int A_WORDS = BM * GEMM_LD32, B_WORDS = BN * GEMM_LD32;
    static constexpr int WN = WN_;
    static_assert(TM % 16 == 0 && TN % 16 == 0, "warp tiles are whole pairs of mma tiles");
    static_assert((BM * 8) % THREADS == 0 && (BN * 4) % THREADS == 0, "even staging");
    static_assert((2 * A_WORDS + STAGES * B_WORDS) * 4 <= 48 * 1024, "static shared memory");
};

// The X tile k0.. of this block, as each thread reads it: BM rows × 8 float4; thread i takes
// float4 i, i + THREADS, ... (8 consecutive threads cover a row).
template <typename S>
struct XTile {
    float v[S::XS][4];
};

template <typename S>
__device__ __forceinline__ void load_x(XTile<S>& x, const float* X, int m0, int m, int k, int ke,
                                       int k0, bool vec) {
#pragma unroll
    for (int s = 0; s < S::XS; s++) {
        const int idx = threadIdx.x + s * S::THREADS;
        load_x4(x.v[s], X, m0 + idx / 8, k0 + (idx % 8) * 4, m, k, ke, vec);
    }
}

template <typename T, typename S>
__device__ __forceinline__ void store_x(const XTile<S>& x, u32* As) {
#pragma unroll
    for (int s = 0; s < S::XS; s++) {
        const int idx = threadIdx.x + s * S::THREADS;
        u32* d = As + (idx / 8) * GEMM_LD32 + (idx % 8) * 2;
        d[0] = Mma<T>::pack(x.v[s][0], x.v[s][1]);
        d[1] = Mma<T>::pack(x.v[s][2], x.v[s][3]);
    }
}

// The W tile k0.. into Bs: BN rows × 4 chunks of 8 halves (four consecutive threads cover a
// row's 64 bytes). With `vec` (k % 8 == 0, W 16-byte aligned) a chunk is wholly inside or
// outside the matrix and travels by cp.async; otherwise element-wise.
template <typename S>
__device__ __forceinline__ void load_w(u32* Bs, const u16* W, int n0, int n, int k, int ke, int k0,
                                       bool vec) {
#pragma unroll
    for (int s = 0; s < S::WS; s++) {
        const int idx = threadIdx.x + s * S::THREADS;
        const int row = idx / 4;
        stage_w8(Bs + row * GEMM_LD32 + (idx % 4) * 4, W, n0 + row, k0 + (idx % 4) * 8, n, k, ke, vec);
    }
}

template <typename T, typename S>
__device__ void gemm(const float* X, const u16* W, float* Y, int m, int n, int k, int k_split) {
    __shared__ uint4 As_[2 * S::A_WORDS / 4];         // X tiles, double-buffered
    __shared__ uint4 Bs_[S::STAGES * S::B_WORDS / 4];  // W tiles, the cp.async ring
    u32* As = reinterpret_cast<u32*>(As_);
    u32* Bs = reinterpret_cast<u32*>(Bs_);

    const int m0 = blockIdx.y * S::BM, n0 = blockIdx.x * S::BN;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int wm = (warp / S::WN) * S::TM, wn = (warp % S::WN) * S::TN;
    const bool xvec = k % 4 == 0 && (unsigned long long)X % 16 == 0;
    const bool wvec = k % 8 == 0 && (unsigned long long)W % 16 == 0;
    // Split z = blockIdx.z sums columns kb .. ke − 1 into its own m × n slice of Y.
    const int kb = blockIdx.z * k_split, ke = min(k, kb + k_split);
    Y += (long long)blockIdx.z * m * n;
    const int tiles = (ke - kb + GEMM_BK - 1) / GEMM_BK;

    float acc[S::MI][S::NJ][4];
#pragma unroll
    for (int i = 0; i < S::MI; i++)
#pragma unroll
        for (int j = 0; j < S::NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    // Prologue: W tiles 0 .. STAGES-2 in flight (one group each, empty past the end), X tile 0
    // stored.
#pragma unroll
    for (int s = 0; s < S::STAGES - 1; s++) {
        if (s < tiles) load_w<S>(Bs + s * S::B_WORDS, W, n0, n, k, ke, kb + s * GEMM_BK, wvec);
        cp_async_commit();
    }
    XTile<S> x;
    load_x<S>(x, X, m0, m, k, ke, kb, xvec);
    store_x<T, S>(x, As);

    // ldmatrix row addresses of this lane within a tile: A matrix q = lane / 8 is rows
    // (q % 2) * 8.., k (q / 2) * 8..; B matrix q is W rows (q / 2) * 8.., k (q % 2) * 8...
    const int q = lane / 8, r8 = lane % 8;
    const int a_off = (wm + (q % 2) * 8 + r8) * GEMM_LD32 + (q / 2) * 4;
    const int b_off = (wn + (q / 2) * 8 + r8) * GEMM_LD32 + (q % 2) * 4;

    for (int t = 0; t < tiles; t++) {
        cp_async_wait<S::STAGES - 2>();  // this thread's copies of W tile t have landed
        __syncthreads();                 // everyone's; and everyone is done with tile t - 1
        const int next = t + S::STAGES - 1;
        if (next < tiles)
            load_w<S>(Bs + (next % S::STAGES) * S::B_WORDS, W, n0, n, k, ke, kb + next * GEMM_BK, wvec);
        cp_async_commit();
        if (t + 1 < tiles) load_x<S>(x, X, m0, m, k, ke, kb + (t + 1) * GEMM_BK, xvec);

        const u32* At = As + (t % 2) * S::A_WORDS;
        const u32* Bt = Bs + (t % S::STAGES) * S::B_WORDS;
#pragma unroll
        for (int ks = 0; ks < GEMM_BK / 16; ks++) {
            const int kw = ks * 8;  // k offset in 32-bit words
            u32 a[S::MI][4], b[S::NJ][2];
#pragma unroll
            for (int i = 0; i < S::MI; i++) ldmatrix_x4(a[i], smem_addr(At + a_off + i * 16 * GEMM_LD32 + kw));
#pragma unroll
            for (int jj = 0; jj < S::NJ / 2; jj++) {
                u32 r[4];
                ldmatrix_x4(r, smem_addr(Bt + b_off + jj * 16 * GEMM_LD32 + kw));
                b[2 * jj][0] = r[0], b[2 * jj][1] = r[1];
                b[2 * jj + 1][0] = r[2], b[2 * jj + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < S::MI; i++)
#pragma unroll
                for (int j = 0; j < S::NJ; j++) Mma<T>::run(acc[i][j], a[i], b[j]);
        }
        if (t + 1 < tiles) store_x<T, S>(x, As + ((t + 1) % 2) * S::A_WORDS);
    }
    cp_async_wait<0>();  // no copy outlives the block (only empty groups remain here)

    const int g = lane / 4, tq = lane % 4;
#pragma unroll
    for (int i = 0; i < S::MI; i++)
#pragma unroll
        for (int j = 0; j < S::NJ; j++) {
            const int r = m0 + wm + i * 16 + g;
            const int c = n0 + wn + j * 8 + 2 * tq;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int rr = r + (e / 2) * 8, cc = c + e % 2;
                if (rr < m && cc < n) Y[(long long)rr * n + cc] = acc[i][j][e];
            }
        }
}

// The entry points, gemm_<BM>x<BN>_{bf16,f16} for each tile shape (kernels/src/shapes.rs
// GEMM_TILES lists the same shapes).
#define GEMM_ENTRY(NAME, T, BM, BN, WM, WN, STAGES)                                               \
    extern "C" __global__ void __launch_bounds__(WM * WN * WARP)                                  \
        NAME(const float* X, const u16* W, float* Y, int m, int n, int k, int k_split) {          \
        stream_wait();                                                                            \
        gemm<T, GemmShape<BM, BN, WM, WN, STAGES> >(X, W, Y, m, n, k, k_split);                   \
    }
GEMM_ENTRY(gemm_64x64_bf16, BF16, 64, 64, 2, 2, 3)
GEMM_ENTRY(gemm_64x64_f16, F16, 64, 64, 2, 2, 3)
GEMM_ENTRY(gemm_64x128_bf16, BF16, 64, 128, 1, 4, 3)
GEMM_ENTRY(gemm_64x128_f16, F16, 64, 128, 1, 4, 3)
GEMM_ENTRY(gemm_128x128_bf16, BF16, 128, 128, 2, 4, 2)
GEMM_ENTRY(gemm_128x128_f16, F16, 128, 128, 2, 4, 2)

// Y[i] = P[0][i] + P[1][i] + … + P[splits − 1][i], in that order: the partial products of a
// split GEMM (P: splits slices of len), summed the same way whatever the launch.
extern "C" __global__ void gemm_sum_splits(const float* P, float* Y, int len, int splits) {
    stream_order();
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        float s = P[i];
        for (int z = 1; z < splits; z++) s += P[(long long)z * len + i];
        Y[i] = s;
    }
}
