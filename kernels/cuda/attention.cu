// attention.cu — causal grouped-query attention over the KV cache.
//
// For query row r (position p = pos0 + r; pos0 is read from device memory, see rope.cu) and
// head h, with kv head g = h / (heads / kv_heads):
//   s_t = (q[r,h] · K[t,g]) / sqrt(d)       for t in 0..=p
//   out[r,h] = Σ_t softmax(s)_t · V[t,g]
// computed "flash" style: keys are visited once, a running maximum m, a running sum l and an
// unnormalised output o are rescaled as the maximum grows; scores are never stored.
//
// Per-warp state: the warp owns one (row, head); lane j holds elements j, j+32, … of q and o
// (d ≤ ATT_MAX_D). A score is a warp_sum of the lanes' partial dot products.
//
// Prefill (attn_prefill): grid (heads, ⌈rows / ATT_WARPS⌉), ATT_WARPS warps a block, one query
// row a warp; the block stages ATT_TILE keys and values at a time in shared memory and each
// warp consumes those at or before its own position.
//
// Decode (attn_decode + attn_decode_combine): split-K flash-decoding. One query row; the
// positions 0..=pos0 are cut into chunks of ATT_CHUNK; grid (heads, chunks), where chunks may
// exceed what pos0 needs (a recorded step keeps one grid for many positions): a chunk past
// pos0 writes the empty state (m = −∞, l = 0, o = 0), which weighs exactly 0 when merged; the
// block's warps
// take the chunk's keys round-robin, are merged in warp order in shared memory, and the block
// writes (m, l, o[d]) for its chunk to `partial`. The combine kernel merges the chunks of each
// head in chunk order. No atomics anywhere: the result does not depend on scheduling.

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_PER_LANE (ATT_MAX_D / WARP)
#define ATT_TILE 16
#define ATT_CHUNK 256

struct Online {
    float m, l, o[ATT_PER_LANE];

    __device__ __forceinline__ void init() {
        m = NEG_INF;
        l = 0.0f;
#pragma unroll
        for (int e = 0; e < ATT_PER_LANE; e++) o[e] = 0.0f;
    }

    // Folds in one key with score s and value row v (lane's elements at v[lane + 32e]).
    __device__ __forceinline__ void push(float s, const float* v, int d, int lane) {
        const float m_new = fmaxf(m, s);
        const float corr = __expf(m - m_new);  // m = −∞ the first time: corr = 0
        const float p = __expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int e = 0; e < ATT_PER_LANE; e++) {
            const int c = lane + WARP * e;
            o[e] = o[e] * corr + (c < d ? p * v[c] : 0.0f);
        }
        m = m_new;
    }
};

__device__ __forceinline__ float score(const float q[ATT_PER_LANE], const float* k, int d,
                                       int lane, float scale) {
    float acc = 0.0f;
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) {
        const int c = lane + WARP * e;
        if (c < d) acc = fmaf(q[e], k[c], acc);
    }
    return warp_sum(acc) * scale;
}

__device__ __forceinline__ void load_q(float q[ATT_PER_LANE], const float* src, int d, int lane) {
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) {
        const int c = lane + WARP * e;
        q[e] = c < d ? src[c] : 0.0f;
    }
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
    attn_prefill(const float* q, const float* k_cache, const float* v_cache, float* out,
                 int rows, const int* pos0p, int heads, int kv_heads, int d, float scale) {
    __shared__ float Ks[ATT_TILE * ATT_MAX_D];
    __shared__ float Vs[ATT_TILE * ATT_MAX_D];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int h = blockIdx.x, g = h / (heads / kv_heads);
    const int r0 = blockIdx.y * ATT_WARPS;
    const int r = r0 + warp;
    const int q_dim = heads * d, kv_dim = kv_heads * d;
    const bool active = r < rows;
    const int pos0 = *pos0p;
    const int my_last = pos0 + r;                                   // last key this warp sees
    const int block_last = pos0 + min(rows, r0 + ATT_WARPS) - 1;  // last key of any warp

    float qv[ATT_PER_LANE];
    load_q(qv, q + (long long)(active ? r : 0) * q_dim + h * d, d, lane);
    Online st;
    st.init();

    for (int t0 = 0; t0 <= block_last; t0 += ATT_TILE) {
        __syncthreads();  // the previous tile is consumed
        for (int i = threadIdx.x; i < ATT_TILE * d; i += blockDim.x) {
            const int t = t0 + i / d, c = i % d;
            const long long src = (long long)t * kv_dim + g * d + c;
            Ks[i] = t <= block_last ? k_cache[src] : 0.0f;
            Vs[i] = t <= block_last ? v_cache[src] : 0.0f;
        }
        __syncthreads();
        if (active) {
            const int n = min(ATT_TILE, my_last - t0 + 1);
            for (int j = 0; j < n; j++) {
                const float s = score(qv, Ks + j * d, d, lane, scale);
                st.push(s, Vs + j * d, d, lane);
            }
        }
    }
    if (!active) return;
    float* dst = out + (long long)r * q_dim + h * d;
    const float inv = 1.0f / st.l;
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) {
        const int c = lane + WARP * e;
        if (c < d) dst[c] = st.o[e] * inv;
    }
}

// partial layout: [heads, chunks, d + 2] with (m, l, o[0..d]).
extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
    attn_decode(const float* q, const float* k_cache, const float* v_cache, float* partial,
                const int* pos0p, int heads, int kv_heads, int d, float scale) {
    __shared__ float ms[ATT_WARPS], ls[ATT_WARPS];
    __shared__ float os[ATT_WARPS * ATT_MAX_D];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int h = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
    const int g = h / (heads / kv_heads);
    const int kv_dim = kv_heads * d;
    const int t_begin = chunk * ATT_CHUNK;
    const int t_end = min(t_begin + ATT_CHUNK, *pos0p + 1);

    float qv[ATT_PER_LANE];
    load_q(qv, q + h * d, d, lane);
    Online st;
    st.init();
    for (int t = t_begin + warp; t < t_end; t += ATT_WARPS) {
        const long long off = (long long)t * kv_dim + g * d;
        st.push(score(qv, k_cache + off, d, lane, scale), v_cache + off, d, lane);
    }

    if (lane == 0) {
        ms[warp] = st.m;
        ls[warp] = st.l;
    }
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) {
        const int c = lane + WARP * e;
        if (c < d) os[warp * ATT_MAX_D + c] = st.o[e];
    }
    __syncthreads();

    // Merge the warps in order 0..ATT_WARPS (a warp that saw no key has m = −∞, weight 0).
    float m = NEG_INF;
    for (int w = 0; w < ATT_WARPS; w++) m = fmaxf(m, ms[w]);
    float* dst = partial + ((long long)h * chunks + chunk) * (d + 2);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (ms[w] != NEG_INF) o += os[w * ATT_MAX_D + c] * __expf(ms[w] - m);
        dst[2 + c] = o;
    }
    if (threadIdx.x == 0) {
        float l = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (ms[w] != NEG_INF) l += ls[w] * __expf(ms[w] - m);
        dst[0] = m;
        dst[1] = l;
    }
}

// Grid: heads blocks; threads over d. out: [heads · d] (one query row).
extern "C" __global__ void attn_decode_combine(const float* partial, float* out, int chunks, int d) {
    const int h = blockIdx.x;
    const float* base = partial + (long long)h * chunks * (d + 2);
    float m = NEG_INF;
    for (int c = 0; c < chunks; c++) m = fmaxf(m, base[(long long)c * (d + 2)]);
    float l = 0.0f;
    for (int c = 0; c < chunks; c++) {
        const float* p = base + (long long)c * (d + 2);
        l += p[1] * __expf(p[0] - m);
    }
    const float inv = 1.0f / l;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float o = 0.0f;
        for (int c = 0; c < chunks; c++) {
            const float* p = base + (long long)c * (d + 2);
            o += p[2 + i] * __expf(p[0] - m);
        }
        out[h * d + i] = o * inv;
    }
}
