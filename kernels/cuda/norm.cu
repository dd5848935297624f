// norm.cu — RMSNorm, alone and fused with the residual add that precedes it in every block.
//
//   rms_norm:     out[r] = x[r] · rsqrt(mean(x[r]²) + eps) ⊙ w
//   add_rms_norm: x[r] += y[r];  out[r] = x[r] · rsqrt(mean(x[r]²) + eps) ⊙ w
//
// Threads: one block of NORM_THREADS per row. A decode step has one row per sequence, so the
// kernel is one block's latency: each thread loads all its columns (c = thread + i·NORM_THREADS)
// at once into registers, keeps a partial sum of squares over them in order of i, and writes
// the scaled values from the same registers; block_sum adds the partials in a fixed order
// (deterministic). Rows wider than NORM_THREADS · NORM_PER_THREAD (16384) take a strided loop
// that reads the row twice.

#define NORM_THREADS 512
#define NORM_PER_THREAD 32

template <typename T, bool ADD>
__device__ void norm(float* __restrict__ x, const float* __restrict__ y,
                     const typename T::Storage* __restrict__ w, float* __restrict__ out, int rows,
                     int width, float eps) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long off = (long long)r * width;
    x += off;
    out += off;
    if (ADD) y += off;
    float ss = 0.0f;
    if (width <= NORM_THREADS * NORM_PER_THREAD) {
        float v[NORM_PER_THREAD];
#pragma unroll
        for (int i = 0; i < NORM_PER_THREAD; i++) {
            const int c = threadIdx.x + i * NORM_THREADS;
            v[i] = c < width ? (ADD ? x[c] + y[c] : x[c]) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < NORM_PER_THREAD; i++) {
            const int c = threadIdx.x + i * NORM_THREADS;
            if (ADD && c < width) x[c] = v[i];
            ss += v[i] * v[i];
        }
        const float scale = rsqrtf(block_sum(ss) / (float)width + eps);
#pragma unroll
        for (int i = 0; i < NORM_PER_THREAD; i++) {
            const int c = threadIdx.x + i * NORM_THREADS;
            if (c < width) out[c] = v[i] * scale * Weight<T>::get(w, c);
        }
        return;
    }
    // Each thread adds exactly the columns it later reads: no barrier between add and sum.
    for (int c = threadIdx.x; c < width; c += NORM_THREADS) {
        const float v = ADD ? x[c] + y[c] : x[c];
        if (ADD) x[c] = v;
        ss += v * v;
    }
    const float scale = rsqrtf(block_sum(ss) / (float)width + eps);
    for (int c = threadIdx.x; c < width; c += NORM_THREADS) out[c] = x[c] * scale * Weight<T>::get(w, c);
}

#define NORM_ENTRIES(T, S)                                                                        \
    extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                    \
        rms_norm_##S(const float* x, const T::Storage* w, float* out, int rows, int width,        \
                     float eps) {                                                                 \
        stream_order();                                                                           \
        norm<T, false>((float*)x, nullptr, w, out, rows, width, eps); /* x not written */         \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                    \
        add_rms_norm_##S(float* x, const float* y, const T::Storage* w, float* out, int rows,     \
                         int width, float eps) {                                                  \
        stream_order();                                                                           \
        norm<T, true>(x, y, w, out, rows, width, eps);                                            \
    }

NORM_ENTRIES(F32, f32)
NORM_ENTRIES(BF16, bf16)
NORM_ENTRIES(F16, f16)
