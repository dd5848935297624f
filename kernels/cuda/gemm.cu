// gemm.cu — tensor-core matrix product for prefill, BF16 or F16 weights, F32 accumulation.
//
//   Y[i, j] = Σ_c X[i, c] · W[j, c]        X: [m, k] f32, W: [n, k] bf16/f16, Y: [m, n] f32
//
// X is rounded to the weight's 16-bit type as it is staged into shared memory (as every
// BF16 inference engine does for its matrix units); products accumulate in f32.
//
// Threads: a block computes a GEMM_BM × GEMM_BN tile of Y with 4 warps in a 2 × 2 layout,
// each warp a 32 × 32 sub-tile made of 2 × 4 `mma.sync.m16n8k16` tiles. The k dimension is
// walked GEMM_BK = 32 columns at a time, as a pipeline (sm_80 and later):
//   * W tiles stream into a ring of GEMM_STAGES shared buffers with `cp.async` (16 bytes a copy,
//     no registers; out-of-range chunks zero-filled), GEMM_STAGES − 1 tiles ahead of the math;
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
//
// Fragment layout of m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with
// g = lane / 4 and t = lane % 4:
//   A (row-major 16×16): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B (col-major 16×8):  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]   (= W[g][2t..] — W is k-contiguous)
//   C (16×8 f32):        c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// so the A tile is the four 8×8 matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7,
// k 8-15), (rows 8-15, k 8-15) of one ldmatrix.x4, and two B tiles j, j+1 are the matrices
// (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) of W's rows.

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 32
#define GEMM_STAGES 3                  // W tiles in the cp.async ring
#define GEMM_LD (GEMM_BK + 8)          // padded row, in 16-bit elements
#define GEMM_LD32 (GEMM_LD / 2)        // the same, in 32-bit words
#define GEMM_TILE_WORDS (GEMM_BM * GEMM_LD32)
#define GEMM_THREADS 128

// The X tile k0.. of this block, as each thread reads it: 64 rows × 8 float4 = 512 float4,
// four per thread; thread i takes float4 i, i + 128, ... (8 consecutive threads cover a row).
struct XTile {
    float v[4][4];
};

__device__ __forceinline__ void load_x(XTile& x, const float* X, int m0, int m, int k, int k0,
                                       bool vec) {
#pragma unroll
    for (int s = 0; s < 4; s++) {
        const int idx = threadIdx.x + s * GEMM_THREADS;
        const int row = m0 + idx / 8, col = k0 + (idx % 8) * 4;
        if (vec) {  // k % 4 == 0: the float4 is wholly inside or wholly outside the row
            float4 f = {0.0f, 0.0f, 0.0f, 0.0f};
            if (row < m && col < k) f = *reinterpret_cast<const float4*>(X + (long long)row * k + col);
            x.v[s][0] = f.x, x.v[s][1] = f.y, x.v[s][2] = f.z, x.v[s][3] = f.w;
        } else {
#pragma unroll
            for (int e = 0; e < 4; e++)
                x.v[s][e] = row < m && col + e < k ? X[(long long)row * k + col + e] : 0.0f;
        }
    }
}

template <typename T>
__device__ __forceinline__ void store_x(const XTile& x, u32* As) {
#pragma unroll
    for (int s = 0; s < 4; s++) {
        const int idx = threadIdx.x + s * GEMM_THREADS;
        u32* d = As + (idx / 8) * GEMM_LD32 + (idx % 8) * 2;
        d[0] = Mma<T>::pack(x.v[s][0], x.v[s][1]);
        d[1] = Mma<T>::pack(x.v[s][2], x.v[s][3]);
    }
}

// The W tile k0.. into Bs: 64 rows × 4 chunks of 8 halves = 256 chunks, two per thread (four
// consecutive threads cover a row's 64 bytes). With `vec` (k % 8 == 0, W 16-byte aligned) a
// chunk is wholly inside or outside the matrix and travels by cp.async; otherwise element-wise.
__device__ __forceinline__ void load_w(u32* Bs, const u16* W, int n0, int n, int k, int k0,
                                       bool vec) {
#pragma unroll
    for (int s = 0; s < 2; s++) {
        const int idx = threadIdx.x + s * GEMM_THREADS;
        const int row = idx / 4, col = k0 + (idx % 4) * 8;
        u32* d = Bs + row * GEMM_LD32 + (idx % 4) * 4;
        const bool inside = n0 + row < n && col < k;
        const u16* src = inside ? W + (long long)(n0 + row) * k + col : W;
        if (vec) {
            cp_async16(smem_addr(d), src, inside ? 16 : 0);
        } else {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = col + 2 * e;
                const u32 lo = n0 + row < n && c < k ? src[2 * e] : 0;
                const u32 hi = n0 + row < n && c + 1 < k ? src[2 * e + 1] : 0;
                d[e] = lo | hi << 16;
            }
        }
    }
}

template <typename T>
__device__ void gemm(const float* X, const u16* W, float* Y, int m, int n, int k) {
    __shared__ uint4 As_[2 * GEMM_TILE_WORDS / 4];            // X tiles, double-buffered
    __shared__ uint4 Bs_[GEMM_STAGES * GEMM_TILE_WORDS / 4];  // W tiles, the cp.async ring
    u32* As = reinterpret_cast<u32*>(As_);
    u32* Bs = reinterpret_cast<u32*>(Bs_);

    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    const bool xvec = k % 4 == 0 && (unsigned long long)X % 16 == 0;
    const bool wvec = k % 8 == 0 && (unsigned long long)W % 16 == 0;
    const int tiles = (k + GEMM_BK - 1) / GEMM_BK;

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    // Prologue: W tiles 0 .. STAGES-2 in flight (one group each, empty past the end), X tile 0
    // stored.
#pragma unroll
    for (int s = 0; s < GEMM_STAGES - 1; s++) {
        if (s < tiles) load_w(Bs + s * GEMM_TILE_WORDS, W, n0, n, k, s * GEMM_BK, wvec);
        cp_async_commit();
    }
    XTile x;
    load_x(x, X, m0, m, k, 0, xvec);
    store_x<T>(x, As);

    // ldmatrix row addresses of this lane within a tile: A matrix q = lane / 8 is rows
    // (q % 2) * 8.., k (q / 2) * 8..; B matrix q is W rows (q / 2) * 8.., k (q % 2) * 8...
    const int q = lane / 8, r8 = lane % 8;
    const int a_off = (wm + (q % 2) * 8 + r8) * GEMM_LD32 + (q / 2) * 4;
    const int b_off = (wn + (q / 2) * 8 + r8) * GEMM_LD32 + (q % 2) * 4;

    for (int t = 0; t < tiles; t++) {
        cp_async_wait<GEMM_STAGES - 2>();  // this thread's copies of W tile t have landed
        __syncthreads();                   // everyone's; and everyone is done with tile t - 1
        const int next = t + GEMM_STAGES - 1;
        if (next < tiles)
            load_w(Bs + (next % GEMM_STAGES) * GEMM_TILE_WORDS, W, n0, n, k, next * GEMM_BK, wvec);
        cp_async_commit();
        if (t + 1 < tiles) load_x(x, X, m0, m, k, (t + 1) * GEMM_BK, xvec);

        const u32* At = As + (t % 2) * GEMM_TILE_WORDS;
        const u32* Bt = Bs + (t % GEMM_STAGES) * GEMM_TILE_WORDS;
#pragma unroll
        for (int ks = 0; ks < GEMM_BK / 16; ks++) {
            const int kw = ks * 8;  // k offset in 32-bit words
            u32 a[2][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 2; i++) ldmatrix_x4(a[i], smem_addr(At + a_off + i * 16 * GEMM_LD32 + kw));
#pragma unroll
            for (int jj = 0; jj < 2; jj++) {
                u32 r[4];
                ldmatrix_x4(r, smem_addr(Bt + b_off + jj * 16 * GEMM_LD32 + kw));
                b[2 * jj][0] = r[0], b[2 * jj][1] = r[1];
                b[2 * jj + 1][0] = r[2], b[2 * jj + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) Mma<T>::run(acc[i][j], a[i], b[j]);
        }
        if (t + 1 < tiles) store_x<T>(x, As + ((t + 1) % 2) * GEMM_TILE_WORDS);
    }
    cp_async_wait<0>();  // no copy outlives the block (only empty groups remain here)

    const int g = lane / 4, tq = lane % 4;
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int r = m0 + wm + i * 16 + g;
            const int c = n0 + wn + j * 8 + 2 * tq;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int rr = r + (e / 2) * 8, cc = c + e % 2;
                if (rr < m && cc < n) Y[(long long)rr * n + cc] = acc[i][j][e];
            }
        }
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    gemm_bf16(const float* X, const u16* W, float* Y, int m, int n, int k) {
    stream_wait();
    gemm<BF16>(X, W, Y, m, n, k);
}
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    gemm_f16(const float* X, const u16* W, float* Y, int m, int n, int k) {
    stream_wait();
    gemm<F16>(X, W, Y, m, n, k);
}
