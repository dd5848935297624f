// gemm.cu — tensor-core matrix product for prefill, BF16 or F16 weights, F32 accumulation.
//
//   Y[i, j] = Σ_c X[i, c] · W[j, c]        X: [m, k] f32, W: [n, k] bf16/f16, Y: [m, n] f32
//
// X is rounded to the weight's 16-bit type as it is staged into shared memory (as every
// BF16 inference engine does for its matrix units); products accumulate in f32.
//
// Threads: a block computes a GEMM_BM × GEMM_BN tile of Y with 4 warps in a 2 × 2 layout,
// each warp a 32 × 32 sub-tile made of 2 × 4 `mma.sync.m16n8k16` tiles. The k dimension is
// walked GEMM_BK = 32 columns at a time: all 128 threads stage the X tile (converted) and the
// W tile into shared memory, then each warp runs two k16 steps of mma. Shared rows are padded
// to 40 halves so that the fragment loads below hit 32 distinct banks. Each output element is
// written by exactly one thread after the whole k loop: deterministic.
//
// Fragment layout of m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with
// g = lane / 4 and t = lane % 4:
//   A (row-major 16×16): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B (col-major 16×8):  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]   (= W[g][2t..] — W is k-contiguous)
//   C (16×8 f32):        c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 32
#define GEMM_LD (GEMM_BK + 8)          // padded row, in 16-bit elements
#define GEMM_LD32 (GEMM_LD / 2)        // the same, in 32-bit words
#define GEMM_THREADS 128

template <typename T> struct Mma;

template <> struct Mma<BF16> {
    __device__ __forceinline__ static u32 pack(float lo, float hi) { return pack_bf16x2(lo, hi); }
    __device__ __forceinline__ static void run(float c[4], const u32 a[4], const u32 b[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

template <> struct Mma<F16> {
    __device__ __forceinline__ static u32 pack(float lo, float hi) { return pack_f16x2(lo, hi); }
    __device__ __forceinline__ static void run(float c[4], const u32 a[4], const u32 b[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

template <typename T>
__device__ void gemm(const float* X, const u16* W, float* Y, int m, int n, int k) {
    __shared__ u32 As[GEMM_BM * GEMM_LD32];
    __shared__ u32 Bs[GEMM_BN * GEMM_LD32];

    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    const bool even_k = k % 2 == 0;

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        // Stage: each tile is 64 rows × 16 column pairs = 1024 pairs, 8 per thread; 16
        // consecutive threads cover one row, so global reads are contiguous per row.
#pragma unroll
        for (int s = 0; s < (GEMM_BM * GEMM_BK / 2) / GEMM_THREADS; s++) {
            const int idx = threadIdx.x + s * GEMM_THREADS;
            const int row = idx / (GEMM_BK / 2), pair = idx % (GEMM_BK / 2);
            const int col = k0 + 2 * pair;

            float x0 = 0.0f, x1 = 0.0f;
            if (m0 + row < m) {
                const float* xp = X + (long long)(m0 + row) * k + col;
                if (even_k && col + 1 < k) {
                    const float2 v = *reinterpret_cast<const float2*>(xp);
                    x0 = v.x; x1 = v.y;
                } else {
                    if (col < k) x0 = xp[0];
                    if (col + 1 < k) x1 = xp[1];
                }
            }
            As[row * GEMM_LD32 + pair] = Mma<T>::pack(x0, x1);

            u32 w2 = 0;
            if (n0 + row < n) {
                const u16* wp = W + (long long)(n0 + row) * k + col;
                if (even_k && col + 1 < k) {
                    w2 = *reinterpret_cast<const u32*>(wp);
                } else {
                    if (col < k) w2 = wp[0];
                    if (col + 1 < k) w2 |= ((u32)wp[1]) << 16;
                }
            }
            Bs[row * GEMM_LD32 + pair] = w2;
        }
        __syncthreads();

#pragma unroll
        for (int ks = 0; ks < GEMM_BK / 16; ks++) {
            const int kw = ks * 8;  // k offset in 32-bit words
            u32 a[2][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int r = wm + i * 16 + g;
                a[i][0] = As[r * GEMM_LD32 + kw + t];
                a[i][1] = As[(r + 8) * GEMM_LD32 + kw + t];
                a[i][2] = As[r * GEMM_LD32 + kw + 4 + t];
                a[i][3] = As[(r + 8) * GEMM_LD32 + kw + 4 + t];
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int r = wn + j * 8 + g;
                b[j][0] = Bs[r * GEMM_LD32 + kw + t];
                b[j][1] = Bs[r * GEMM_LD32 + kw + 4 + t];
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) Mma<T>::run(acc[i][j], a[i], b[j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int r = m0 + wm + i * 16 + g;
            const int c = n0 + wn + j * 8 + 2 * t;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int rr = r + (e / 2) * 8, cc = c + e % 2;
                if (rr < m && cc < n) Y[(long long)rr * n + cc] = acc[i][j][e];
            }
        }
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    gemm_bf16(const float* X, const u16* W, float* Y, int m, int n, int k) {
    gemm<BF16>(X, W, Y, m, n, k);
}
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    gemm_f16(const float* X, const u16* W, float* Y, int m, int n, int k) {
    gemm<F16>(X, W, Y, m, n, k);
}
