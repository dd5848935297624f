// gemv.cu — matrix-vector products for decode (and the f32-weight fallback of prefill).
//
//   y_p[r, j] = Σ_c x[r, c] · W_p[j, c]      W_p: [n_p, k] in its stored dtype, x, y_p: f32
//
// for up to three weights p that read the same input x (Q, K and V; gate and up; or one): one
// launch instead of three, and enough blocks to fill the device even where one weight alone is
// short (the K and V projections of a GQA model). Decode is bound by reading the weights once,
// so the kernel is shaped around that stream:
//   * one warp per output j; GEMV_WARPS warps per block; the block index y + z·gridDim.y walks
//     the blocks of W_0, then W_1, then W_2 (weights with n_p = 0 have none);
//   * GEMV_ROWS activation rows per warp (blockIdx.x selects the group): each weight chunk is
//     read once for all the rows of the group. The groups are the grid's fastest axis, so the
//     blocks reading one weight chunk for different groups run side by side and all but the
//     first find it in L2: a batch of decode rows reads the weights from memory about once;
//   * when k % 8 == 0 and the pointers are 16-byte aligned, each lane reads 8 weights with one
//     128-bit load, four chunks (four independent 128-bit loads) in flight per iteration; lanes
//     take consecutive 8-element chunks, so a warp reads 512 contiguous bytes of bf16 per load;
//   * otherwise a scalar loop (odd shapes of test models);
//   * a block lets the next kernel start, asks L2 for the first 4 KB of each of its weight rows
//     (prefetch_row), and only then waits for the previous kernel: the weights stream from
//     memory while the norm, RoPE or attention before it runs.
// Each row's sum is formed the same way whatever its slot in the group and however many rows
// the launch has (two accumulators: chunks 0 and 2 of an iteration into the first, 1 and 3
// into the second; then the tail; then a fixed shuffle tree): no atomics, deterministic and
// batch-invariant.

#define GEMV_WARPS 4
#define GEMV_ROWS 4
#define GEMV_PAIR_ROWS 8  // rows from which gemv2_* (two outputs a warp) is used
#define GEMV_QUAD_ROWS 16  // rows from which gemv4_* (four outputs a warp) is used

// sums[q][s] = x[s] · w[q] for J weight rows w[q] and the nrows (≤ GEMV_ROWS) rows of x, on
// every lane of the warp. Each x chunk is loaded once for the J weight rows (J = 2 or 4 divide
// the L1 traffic of x, which at 16 rows is 32 times the weights' bytes); each sum's own
// sequence of fmaf is the same whatever J is, so J changes no bit of any result.
template <typename T, int J>
__device__ __forceinline__ void gemv_dots(const typename T::Storage* const w[J], const float* x, int k,
                                          int nrows, float sums[J][GEMV_ROWS]) {
    const int lane = threadIdx.x % WARP;
    float acc[J][GEMV_ROWS][2];
#pragma unroll
    for (int q = 0; q < J; q++)
#pragma unroll
        for (int s = 0; s < GEMV_ROWS; s++) acc[q][s][0] = acc[q][s][1] = 0.0f;
    // The vector path needs 16-byte aligned rows; the check is uniform across the warp.
    bool aligned = k % 8 == 0 && ((unsigned long long)x % 16 == 0);
#pragma unroll
    for (int q = 0; q < J; q++) aligned = aligned && ((unsigned long long)w[q] % 16 == 0);
    if (aligned) {
        const int chunks = k / 8;
        int c = lane;
        // Four chunks an iteration, taken H at a time (H = 2 for four weight rows, to bound the
        // registers); each accumulator still sees its chunks in the same order.
        constexpr int H = J >= 4 ? 2 : 4;
        for (; c + 3 * WARP < chunks; c += 4 * WARP) {
#pragma unroll
            for (int h = 0; h < 4; h += H) {
                float wv[J][H][8];
#pragma unroll
                for (int q = 0; q < J; q++)
#pragma unroll
                    for (int u = 0; u < H; u++) Weight<T>::load8(w[q] + 8 * (c + (h + u) * WARP), wv[q][u]);
#pragma unroll
                for (int s = 0; s < GEMV_ROWS; s++) {
                    if (s < nrows) {
#pragma unroll
                        for (int u = 0; u < H; u++) {
                            float xv[8];
                            Weight<F32>::load8(x + (long long)s * k + 8 * (c + (h + u) * WARP), xv);
#pragma unroll
                            for (int q = 0; q < J; q++)
#pragma unroll
                                for (int e = 0; e < 8; e++)
                                    acc[q][s][(h + u) % 2] = fmaf(wv[q][u][e], xv[e], acc[q][s][(h + u) % 2]);
                        }
                    }
                }
            }
        }
        for (; c < chunks; c += WARP) {
            float wv[J][8];
#pragma unroll
            for (int q = 0; q < J; q++) Weight<T>::load8(w[q] + 8 * c, wv[q]);
#pragma unroll
            for (int s = 0; s < GEMV_ROWS; s++) {
                if (s < nrows) {
                    float xv[8];
                    Weight<F32>::load8(x + (long long)s * k + 8 * c, xv);
#pragma unroll
                    for (int q = 0; q < J; q++)
#pragma unroll
                        for (int e = 0; e < 8; e++) acc[q][s][0] = fmaf(wv[q][e], xv[e], acc[q][s][0]);
                }
            }
        }
    } else {
        for (int c = lane; c < k; c += WARP) {
            float wc[J];
#pragma unroll
            for (int q = 0; q < J; q++) wc[q] = Weight<T>::get(w[q], c);
#pragma unroll
            for (int s = 0; s < GEMV_ROWS; s++) {
                if (s >= nrows) break;  // x holds nrows rows
                const float xc = x[(long long)s * k + c];
#pragma unroll
                for (int q = 0; q < J; q++) acc[q][s][0] = fmaf(wc[q], xc, acc[q][s][0]);
            }
        }
    }
#pragma unroll
    for (int q = 0; q < J; q++)
#pragma unroll
        for (int s = 0; s < GEMV_ROWS; s++)
            sums[q][s] = s < nrows ? warp_sum(acc[q][s][0] + acc[q][s][1]) : 0.0f;
}

// Outputs j0 .. j0 + J − 1 (those below n) of the rows of the group.
template <typename T, int J>
__device__ __forceinline__ void gemv_rows(const typename T::Storage* W, const float* x, float* y, int j0,
                                          int n, int k, int nrows) {
    const typename T::Storage* w[J];
#pragma unroll
    for (int q = 0; q < J; q++) w[q] = W + (long long)(J == 1 ? j0 : min(j0 + q, n - 1)) * k;
    float sums[J][GEMV_ROWS];
    gemv_dots<T, J>(w, x, k, nrows, sums);
#pragma unroll
    for (int q = 0; q < J; q++)
#pragma unroll
        for (int s = 0; s < GEMV_ROWS; s++)
            if (s < nrows && j0 + q < n && threadIdx.x % WARP == 0) y[(long long)s * n + j0 + q] = sums[q][s];
}

// The weight a warp reads (blocks walk W0's outputs, then W1's, then W2's), which of the three
// it is, its output count and the warp's first output.
template <typename T>
struct GemvPart {
    const typename T::Storage* W;
    int p, n, j0;
};
template <typename T, int J>
__device__ __forceinline__ GemvPart<T> gemv_part(const typename T::Storage* W0, const typename T::Storage* W1,
                                                 const typename T::Storage* W2, int n0, int n1, int n2) {
    const int per_block = GEMV_WARPS * J;
    const int b0 = (n0 + per_block - 1) / per_block, b1 = (n1 + per_block - 1) / per_block;
    int b = blockIdx.y + blockIdx.z * gridDim.y;
    GemvPart<T> g{W0, 0, n0, 0};
    if (b >= b0 + b1) {
        b -= b0 + b1, g.W = W2, g.p = 2, g.n = n2;
    } else if (b >= b0) {
        b -= b0, g.W = W1, g.p = 1, g.n = n1;
    }
    g.j0 = (b * GEMV_WARPS + threadIdx.x / WARP) * J;
    return g;
}

// Before the wait: the weight rows this warp will read (the first row group's blocks only;
// the others find them in L2). Reads no activation.
template <typename T, int J>
__device__ __forceinline__ void prefetch_gemv(const typename T::Storage* W0, const typename T::Storage* W1,
                                              const typename T::Storage* W2, int n0, int n1, int n2, int k) {
    const GemvPart<T> g = gemv_part<T, J>(W0, W1, W2, n0, n1, n2);
    if (blockIdx.x != 0) return;
#pragma unroll
    for (int q = 0; q < J; q++)
        if (g.j0 + q < g.n) prefetch_row(g.W + (long long)(g.j0 + q) * k, (long long)k * sizeof(typename T::Storage));
}

template <typename T, int J>
__device__ void gemv(const typename T::Storage* W0, const typename T::Storage* W1,
                     const typename T::Storage* W2, float* y0, float* y1, float* y2, int n0, int n1,
                     int n2, const float* x, int rows, int k) {
    const GemvPart<T> g = gemv_part<T, J>(W0, W1, W2, n0, n1, n2);
    float* y = g.p == 0 ? y0 : g.p == 1 ? y1 : y2;
    const int r0 = blockIdx.x * GEMV_ROWS;
    if (g.j0 >= g.n || r0 >= rows) return;
    gemv_rows<T, J>(g.W, x + (long long)r0 * k, y + (long long)r0 * g.n, g.j0, g.n, k, min(GEMV_ROWS, rows - r0));
}

// Before the wait: the warp's gate and up rows (as prefetch_gemv).
template <typename T>
__device__ __forceinline__ void prefetch_gemv_swiglu(const typename T::Storage* Wg, const typename T::Storage* Wu,
                                                     int n, int k) {
    const int j = (blockIdx.y + blockIdx.z * gridDim.y) * GEMV_WARPS + threadIdx.x / WARP;
    if (blockIdx.x != 0 || j >= n) return;
    prefetch_row(Wg + (long long)j * k, (long long)k * sizeof(typename T::Storage));
    prefetch_row(Wu + (long long)j * k, (long long)k * sizeof(typename T::Storage));
}

// The MLP's first half for decode rows: y[r, j] = silu(x[r] · Wg[j]) · (x[r] · Wu[j]), one warp
// per j computing both products (each exactly as gemv computes it, sharing the loads of x) and
// swiglu.cu's formula, so the result has the bits of the two GEMVs followed by the swiglu
// kernel, in one launch that writes only y. Grid as gemv's with one output a warp.
template <typename T>
__device__ void gemv_swiglu(const typename T::Storage* Wg, const typename T::Storage* Wu, float* y, int n,
                            const float* x, int rows, int k) {
    const int j = (blockIdx.y + blockIdx.z * gridDim.y) * GEMV_WARPS + threadIdx.x / WARP;
    const int r0 = blockIdx.x * GEMV_ROWS;
    if (j >= n || r0 >= rows) return;
    const int nrows = min(GEMV_ROWS, rows - r0);
    const typename T::Storage* w[2] = {Wg + (long long)j * k, Wu + (long long)j * k};
    float gu[2][GEMV_ROWS];
    gemv_dots<T, 2>(w, x + (long long)r0 * k, k, nrows, gu);
#pragma unroll
    for (int s = 0; s < GEMV_ROWS; s++)
        if (s < nrows && threadIdx.x % WARP == 0)
            y[(long long)(r0 + s) * n + j] = gu[0][s] / (1.0f + expf(-gu[0][s])) * gu[1][s];
}

#define GEMV_SWIGLU(T, S, W)                                                                      \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP)                               \
        gemv_swiglu_##S(const W* Wg, const W* Wu, float* y, int n, const float* x, int rows,      \
                        int k) {                                                                  \
        start_dependents();                                                                       \
        prefetch_gemv_swiglu<T>(Wg, Wu, n, k);                                                    \
        stream_wait();                                                                            \
        gemv_swiglu<T>(Wg, Wu, y, n, x, rows, k);                                                 \
    }
GEMV_SWIGLU(F32, f32, float)
GEMV_SWIGLU(BF16, bf16, u16)
GEMV_SWIGLU(F16, f16, u16)

// gemv_*: one output a warp; gemv2_*: two (from GEMV_PAIR_ROWS rows), gemv4_*: four (from
// GEMV_QUAD_ROWS rows), for batches where the loads of x, not of the weights, bound the
// kernel. Same bits either way.
#define GEMV_ENTRY(NAME, T, W, J)                                                                 \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP)                               \
        NAME(const W* W0, const W* W1, const W* W2, float* y0, float* y1, float* y2, int n0,      \
             int n1, int n2, const float* x, int rows, int k) {                                   \
        start_dependents();                                                                       \
        prefetch_gemv<T, J>(W0, W1, W2, n0, n1, n2, k);                                           \
        stream_wait();                                                                            \
        gemv<T, J>(W0, W1, W2, y0, y1, y2, n0, n1, n2, x, rows, k);                               \
    }
GEMV_ENTRY(gemv_f32, F32, float, 1)
GEMV_ENTRY(gemv_bf16, BF16, u16, 1)
GEMV_ENTRY(gemv_f16, F16, u16, 1)
GEMV_ENTRY(gemv2_f32, F32, float, 2)
GEMV_ENTRY(gemv2_bf16, BF16, u16, 2)
GEMV_ENTRY(gemv2_f16, F16, u16, 2)
GEMV_ENTRY(gemv4_f32, F32, float, 4)
GEMV_ENTRY(gemv4_bf16, BF16, u16, 4)
GEMV_ENTRY(gemv4_f16, F16, u16, 4)
