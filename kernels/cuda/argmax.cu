// argmax.cu — greedy choice on the device: the index of each row's largest logit.
//
//   out[r] = min { i : logits[r, i] = max_j logits[r, j] }     (NaN never wins over a number)
//
// Threads: one block per row (ARGMAX_THREADS threads). Each thread scans a strided slice,
// ARGMAX_UNROLL loads at a time, and keeps its best (value, index); the block then merges pairs in a fixed tree order, breaking
// ties by the lower index, so the result equals a sequential first-maximum scan and does not
// depend on scheduling. Only the chosen ids (4 bytes a row) travel back to the host.

#define ARGMAX_THREADS 1024
#define ARGMAX_UNROLL 8

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    if (v != v) return false;        // NaN never wins
    if (bv != bv) return true;       // anything beats NaN
    return v > bv || (v == bv && i < bi);
}

extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS)
    argmax_rows(const float* logits, u32* out, int rows, int width) {
    stream_order();
    __shared__ float vals[ARGMAX_THREADS];
    __shared__ int idxs[ARGMAX_THREADS];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* row = logits + (long long)r * width;
    float bv = QNAN;
    int bi = 0x7fffffff;
    // ARGMAX_UNROLL loads in flight per thread; `better` is a total order (value, then lower
    // index, NaN last), so the order of visits does not change the result.
    int i = threadIdx.x;
    for (; i + (ARGMAX_UNROLL - 1) * ARGMAX_THREADS < width; i += ARGMAX_UNROLL * ARGMAX_THREADS) {
        float v[ARGMAX_UNROLL];
#pragma unroll
        for (int u = 0; u < ARGMAX_UNROLL; u++) v[u] = row[i + u * ARGMAX_THREADS];
#pragma unroll
        for (int u = 0; u < ARGMAX_UNROLL; u++)
            if (better(v[u], i + u * ARGMAX_THREADS, bv, bi)) {
                bv = v[u];
                bi = i + u * ARGMAX_THREADS;
            }
    }
    for (; i < width; i += ARGMAX_THREADS)
        if (better(row[i], i, bv, bi)) {
            bv = row[i];
            bi = i;
        }
    vals[threadIdx.x] = bv;
    idxs[threadIdx.x] = bi;
    __syncthreads();
    for (int s = ARGMAX_THREADS / 2; s > 0; s /= 2) {
        if (threadIdx.x < s && better(vals[threadIdx.x + s], idxs[threadIdx.x + s], vals[threadIdx.x],
                                      idxs[threadIdx.x])) {
            vals[threadIdx.x] = vals[threadIdx.x + s];
            idxs[threadIdx.x] = idxs[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[r] = idxs[0] == 0x7fffffff ? 0u : (u32)idxs[0];
}
