// norm.cu — RMSNorm, alone and fused with the residual add that precedes it in every block.
//
//   rms_norm:     out[r] = x[r] · rsqrt(mean(x[r]²) + eps) ⊙ w
//   add_rms_norm: x[r] += y[r];  out[r] = x[r] · rsqrt(mean(x[r]²) + eps) ⊙ w
//
// Threads: one block per row; each thread strides over the row's columns and keeps a partial
// sum of squares; block_sum adds the partials in a fixed order (deterministic). The row is read
// once for the sum and once more for the scaling; at hidden sizes ≤ 16K it stays in L1/L2. The
// row, its weight and the output never overlap (__restrict__), so a thread's loads of several
// columns are in flight together.

template <typename T>
__device__ void rms_norm_row(const float* __restrict__ x, const typename T::Storage* __restrict__ w,
                             float* __restrict__ out, int width, float eps) {
    float ss = 0.0f;
#pragma unroll 4
    for (int c = threadIdx.x; c < width; c += blockDim.x) ss += x[c] * x[c];
    const float scale = rsqrtf(block_sum(ss) / (float)width + eps);
#pragma unroll 4
    for (int c = threadIdx.x; c < width; c += blockDim.x) out[c] = x[c] * scale * Weight<T>::get(w, c);
}

template <typename T>
__device__ void rms_norm(const float* x, const typename T::Storage* w, float* out, int rows,
                         int width, float eps) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long off = (long long)r * width;
    rms_norm_row<T>(x + off, w, out + off, width, eps);
}

template <typename T>
__device__ void add_rms_norm(float* __restrict__ x, const float* __restrict__ y,
                             const typename T::Storage* w, float* out, int rows, int width, float eps) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long off = (long long)r * width;
    // Each thread adds exactly the columns it later reads, so no barrier is needed between
    // the add and the sum of squares.
#pragma unroll 4
    for (int c = threadIdx.x; c < width; c += blockDim.x) x[off + c] += y[off + c];
    rms_norm_row<T>(x + off, w, out + off, width, eps);
}

#define NORM_ENTRIES(T, S)                                                                        \
    extern "C" __global__ void rms_norm_##S(const float* x, const T::Storage* w, float* out,      \
                                            int rows, int width, float eps) {                     \
        stream_order();                                                                           \
        rms_norm<T>(x, w, out, rows, width, eps);                                                 \
    }                                                                                             \
    extern "C" __global__ void add_rms_norm_##S(float* x, const float* y, const T::Storage* w,    \
                                                float* out, int rows, int width, float eps) {     \
        stream_order();                                                                           \
        add_rms_norm<T>(x, y, w, out, rows, width, eps);                                          \
    }

NORM_ENTRIES(F32, f32)
NORM_ENTRIES(BF16, bf16)
NORM_ENTRIES(F16, f16)
