// attention.cu — causal grouped-query attention over the paged KV pool.
//
// For query row r (position p = positions[r]) and head h, with kv head g = h / (heads / kv_heads):
//   s_t = (q[r,h] · K[t,g]) / sqrt(d)       for t in 0..=p
//   out[r,h] = Σ_t softmax(s)_t · V[t,g]
// where position t of row r's sequence lives in slot
//   tables[row_table[r] + t / KV_BLOCK] · KV_BLOCK + t % KV_BLOCK
// of this layer's [slots, kv_dim] key and value slabs.
//
// Split-K flash-decoding, the same for every row whatever its kind or its batch, so a row's
// result depends on its own sequence alone:
//   * attn_split: grid (heads, chunks, rows − first): rows first.. (the rows before `first` are
//     prompt rows that attention_prefill.cu computes on tensor cores, or none). Chunk c covers the keys c·ATT_CHUNK .. c·ATT_CHUNK
//     + ATT_CHUNK − 1 that are ≤ p. The grid may hold more chunks than a row needs (a recorded
//     step keeps one grid for many positions, and rows of one pass differ in length): a chunk
//     past p writes the empty state (m = −∞, l = 0, o = 0), which weighs exactly 0 when merged.
//     The block's ATT_WARPS warps take the chunk's keys round-robin (ATT_KEYS at a time), each "flash" style (a
//     running maximum m, sum l and unnormalised output o, rescaled as m grows); the warps are
//     merged in warp order in shared memory and the block writes (m, l, o[d]) to `partial`;
//     with one chunk in the grid it writes the normalised output to `out` itself, with the
//     combine's arithmetic, and no combine is launched.
//   * attn_combine: grid (heads, rows − first); merges the chunks of each (row, head) in chunk
//     order.
// Lane j of a warp holds elements j, j+32, … of q and o (d ≤ ATT_MAX_D); a score is a
// warp_sum of the lanes' partial dot products. No atomics anywhere: the result does not depend
// on scheduling. The pool holds f32 (`attn_split_f32`) or bf16 (`attn_split_bf16`), widened to
// f32 as it is read.

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_PER_LANE (ATT_MAX_D / WARP)
#define ATT_CHUNK 128
#define ATT_KEYS 4    // keys a warp scores at once

struct Online {
    float m, l, o[ATT_PER_LANE];

    __device__ __forceinline__ void init() {
        m = NEG_INF;
        l = 0.0f;
#pragma unroll
        for (int e = 0; e < ATT_PER_LANE; e++) o[e] = 0.0f;
    }

    // Folds in one key with score s and value row v (lane's elements at v[lane + 32e]).
    template <typename T>
    __device__ __forceinline__ void push(float s, const typename Kv<T>::Storage* v, int d, int lane) {
        const float m_new = fmaxf(m, s);
        const float corr = __expf(m - m_new);  // m = −∞ the first time: corr = 0
        const float p = __expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int e = 0; e < ATT_PER_LANE; e++) {
            const int c = lane + WARP * e;
            o[e] = o[e] * corr + (c < d ? p * Kv<T>::get(v, c) : 0.0f);
        }
        m = m_new;
    }
};

template <typename T>
__device__ __forceinline__ float score(const float q[ATT_PER_LANE], const typename Kv<T>::Storage* k,
                                       int d, int lane, float scale) {
    float acc = 0.0f;
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) {
        const int c = lane + WARP * e;
        if (c < d) acc = fmaf(q[e], Kv<T>::get(k, c), acc);
    }
    return warp_sum(acc) * scale;
}

// partial layout: [rows, heads, chunks, d + 2] with (m, l, o[0..d]).
template <typename T>
__device__ void attn_split(const float* q, const typename Kv<T>::Storage* k_pool,
                           const typename Kv<T>::Storage* v_pool, float* partial, float* out,
                           const int* positions, const int* row_table, const int* tables,
                           int first, int heads, int kv_heads, int d, float scale) {
    __shared__ float ms[ATT_WARPS], ls[ATT_WARPS];
    __shared__ float os[ATT_WARPS * ATT_MAX_D];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int h = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y, r = first + blockIdx.z;
    const int g = h / (heads / kv_heads);
    const int q_dim = heads * d, kv_dim = kv_heads * d;
    const int* table = tables + row_table[r];
    const int t_begin = chunk * ATT_CHUNK;
    const int t_end = min(t_begin + ATT_CHUNK, positions[r] + 1);

    float qv[ATT_PER_LANE];
    const float* qr = q + (long long)r * q_dim + h * d;
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) {
        const int c = lane + WARP * e;
        qv[e] = c < d ? qr[c] : 0.0f;
    }
    Online st;
    st.init();
    // The warp's keys t, t + ATT_WARPS, … in order, ATT_KEYS at a time so that their loads are
    // in flight together; the fold order is the same as one at a time.
    int t = t_begin + warp;
    for (; t + (ATT_KEYS - 1) * ATT_WARPS < t_end; t += ATT_KEYS * ATT_WARPS) {
        long long off[ATT_KEYS];
        float s[ATT_KEYS];
#pragma unroll
        for (int u = 0; u < ATT_KEYS; u++) {
            const int tu = t + u * ATT_WARPS;
            off[u] = ((long long)table[tu / KV_BLOCK] * KV_BLOCK + tu % KV_BLOCK) * kv_dim + g * d;
        }
#pragma unroll
        for (int u = 0; u < ATT_KEYS; u++) s[u] = score<T>(qv, k_pool + off[u], d, lane, scale);
#pragma unroll
        for (int u = 0; u < ATT_KEYS; u++) st.push<T>(s[u], v_pool + off[u], d, lane);
    }
    for (; t < t_end; t += ATT_WARPS) {
        const long long slot = (long long)table[t / KV_BLOCK] * KV_BLOCK + t % KV_BLOCK;
        const long long off = slot * kv_dim + g * d;
        st.push<T>(score<T>(qv, k_pool + off, d, lane, scale), v_pool + off, d, lane);
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
    float l = 0.0f;
    for (int w = 0; w < ATT_WARPS; w++)
        if (ms[w] != NEG_INF) l += ls[w] * __expf(ms[w] - m);
    if (chunks == 1) {
        // One chunk: the combine's arithmetic here, with its one weight __expf(m − m) = 1
        // (ex2 of +0 is exactly 1), so the result has the same bits as through attn_combine.
        float* row = out + ((long long)r * heads + h) * d;
        const float wgt = __expf(m - m);
        const float inv = 1.0f / (0.0f + l * wgt);
        for (int c = threadIdx.x; c < d; c += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++)
                if (ms[w] != NEG_INF) o += os[w * ATT_MAX_D + c] * __expf(ms[w] - m);
            row[c] = (0.0f + o * wgt) * inv;
        }
        return;
    }
    float* dst = partial + (((long long)r * heads + h) * chunks + chunk) * (d + 2);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (ms[w] != NEG_INF) o += os[w * ATT_MAX_D + c] * __expf(ms[w] - m);
        dst[2 + c] = o;
    }
    if (threadIdx.x == 0) {
        dst[0] = m;
        dst[1] = l;
    }
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
    attn_split_f32(const float* q, const float* k_pool, const float* v_pool, float* partial,
                   float* out, const int* positions, const int* row_table, const int* tables,
                   int first, int heads, int kv_heads, int d, float scale) {
    stream_order();
    attn_split<F32>(q, k_pool, v_pool, partial, out, positions, row_table, tables, first, heads,
                    kv_heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
    attn_split_bf16(const float* q, const u16* k_pool, const u16* v_pool, float* partial,
                    float* out, const int* positions, const int* row_table, const int* tables,
                    int first, int heads, int kv_heads, int d, float scale) {
    stream_order();
    attn_split<BF16>(q, k_pool, v_pool, partial, out, positions, row_table, tables, first, heads,
                     kv_heads, d, scale);
}

// Grid (heads, rows − first); threads over d. out: [rows, heads · d].
extern "C" __global__ void attn_combine(const float* partial, float* out, int first, int chunks,
                                        int d) {
    stream_order();
    const int h = blockIdx.x, heads = gridDim.x, r = first + blockIdx.y;
    const float* base = partial + ((long long)r * heads + h) * chunks * (d + 2);
    float m = NEG_INF;
    for (int c = 0; c < chunks; c++) m = fmaxf(m, base[(long long)c * (d + 2)]);
    float l = 0.0f;
    for (int c = 0; c < chunks; c++) {
        const float* p = base + (long long)c * (d + 2);
        if (p[0] != NEG_INF) l += p[1] * __expf(p[0] - m);
    }
    const float inv = 1.0f / l;
    float* dst = out + ((long long)r * heads + h) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float o = 0.0f;
        for (int c = 0; c < chunks; c++) {
            const float* p = base + (long long)c * (d + 2);
            if (p[0] != NEG_INF) o += p[2 + i] * __expf(p[0] - m);
        }
        dst[i] = o * inv;
    }
}
