// gemv.cu — matrix-vector products for decode (and the f32-weight fallback of prefill).
//
//   y[r, j] = Σ_c x[r, c] · W[j, c]          W: [n, k] in its stored dtype, x, y: f32
//
// Decode is bound by reading W once, so the kernel is shaped around that stream:
//   * one warp per output j; GEMV_WARPS warps per block; blockIdx.y selects the activation row r;
//   * when k % 8 == 0 (rows of W 16-byte aligned for bf16/f16) each lane reads 8 weights per
//     step with one 128-bit load and the matching 8 activations with two float4 loads; lanes
//     take consecutive 8-element chunks, so a warp reads 512 contiguous bytes of bf16 per step;
//   * otherwise a scalar loop (odd shapes of test models);
//   * two independent accumulators per lane hide FMA latency; the warp's lanes are added with
//     shuffles in a fixed order: no atomics, deterministic.

#define GEMV_WARPS 4

template <typename T>
__device__ void gemv(const typename T::Storage* W, const float* x, float* y, int n, int k) {
    const int lane = threadIdx.x % WARP;
    const int j = blockIdx.x * GEMV_WARPS + threadIdx.x / WARP;
    const int r = blockIdx.y;
    if (j >= n) return;
    const typename T::Storage* w = W + (long long)j * k;
    const float* xr = x + (long long)r * k;
    float acc0 = 0.0f, acc1 = 0.0f;
    // The vector path needs 16-byte aligned rows; the check is uniform across the grid.
    const bool aligned = k % 8 == 0 && ((unsigned long long)W % 16 == 0) && ((unsigned long long)x % 16 == 0);
    if (aligned) {
        const int chunks = k / 8;
        int c = lane;
        for (; c + WARP < chunks; c += 2 * WARP) {
            float wa[8], wb[8], xa[8], xb[8];
            Weight<T>::load8(w + 8 * c, wa);
            Weight<T>::load8(w + 8 * (c + WARP), wb);
            Weight<F32>::load8(xr + 8 * c, xa);
            Weight<F32>::load8(xr + 8 * (c + WARP), xb);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                acc0 = fmaf(wa[e], xa[e], acc0);
                acc1 = fmaf(wb[e], xb[e], acc1);
            }
        }
        if (c < chunks) {
            float wa[8], xa[8];
            Weight<T>::load8(w + 8 * c, wa);
            Weight<F32>::load8(xr + 8 * c, xa);
#pragma unroll
            for (int e = 0; e < 8; e++) acc0 = fmaf(wa[e], xa[e], acc0);
        }
    } else {
        for (int c = lane; c < k; c += WARP) acc0 = fmaf(Weight<T>::get(w, c), xr[c], acc0);
    }
    const float s = warp_sum(acc0 + acc1);
    if (lane == 0) y[(long long)r * n + j] = s;
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP)
    gemv_f32(const float* W, const float* x, float* y, int n, int k) {
    gemv<F32>(W, x, y, n, k);
}
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP)
    gemv_bf16(const u16* W, const float* x, float* y, int n, int k) {
    gemv<BF16>(W, x, y, n, k);
}
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP)
    gemv_f16(const u16* W, const float* x, float* y, int n, int k) {
    gemv<F16>(W, x, y, n, k);
}
