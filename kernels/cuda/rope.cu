// rope.cu — rotary position embedding fused with the write of keys and values to the paged
// KV pool.
//
// For row r at position p = positions[r] and each head, pairs (i, i + d/2) of the head's d
// values (the rotate-half pairing of Hugging Face LLaMA) turn by the angle p · inv_freq[i]:
//   a' = a·cos − b·sin,   b' = b·cos + a·sin
// q is rotated in place; k is rotated as it is written to the pool; v is copied. Row r's slot
// is tables[row_table[r] + p / KV_BLOCK] · KV_BLOCK + p % KV_BLOCK; k_pool and v_pool point at
// this layer's [blocks · KV_BLOCK, kv_dim] slabs.
//
// The frequency table (d/2 ≤ ROPE_MAX_HALF floats, llama3 scaling already applied on the host)
// travels by value as a kernel parameter, so the launch needs no upload and can be replayed
// in a CUDA graph. Positions and tables are read from device memory (staged by the host
// before the pass) for the same reason: a recorded decode step replays at new positions.
//
// Threads: one block per row; threads stride over the (head, i) pairs of q, then of k/v.
// The pool holds f32 (`rope_cache_f32`) or bf16 (`rope_cache_bf16`, rounded to nearest even).

#define ROPE_MAX_HALF 256

struct InvFreq {
    float f[ROPE_MAX_HALF];
};

template <typename T>
__device__ void rope_cache(float* q, const float* k, const float* v, typename Kv<T>::Storage* k_pool,
                           typename Kv<T>::Storage* v_pool, int rows, const int* positions,
                           const int* row_table, const int* tables, int heads, int kv_heads,
                           int head_dim, const InvFreq& inv_freq) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const int half = head_dim / 2;
    const int pos = positions[r];
    const int q_dim = heads * head_dim, kv_dim = kv_heads * head_dim;
    const long long slot = (long long)tables[row_table[r] + pos / KV_BLOCK] * KV_BLOCK + pos % KV_BLOCK;

    float* qr = q + (long long)r * q_dim;
    for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
        const int h = idx / half, i = idx % half;
        float s, c;
        sincosf((float)pos * inv_freq.f[i], &s, &c);
        float* head = qr + h * head_dim;
        const float a = head[i], b = head[i + half];
        head[i] = a * c - b * s;
        head[i + half] = b * c + a * s;
    }

    const float* kr = k + (long long)r * kv_dim;
    const float* vr = v + (long long)r * kv_dim;
    typename Kv<T>::Storage* kc = k_pool + slot * kv_dim;
    typename Kv<T>::Storage* vc = v_pool + slot * kv_dim;
    for (int idx = threadIdx.x; idx < kv_heads * half; idx += blockDim.x) {
        const int h = idx / half, i = idx % half;
        float s, c;
        sincosf((float)pos * inv_freq.f[i], &s, &c);
        const int o = h * head_dim;
        const float a = kr[o + i], b = kr[o + i + half];
        Kv<T>::put(kc, o + i, a * c - b * s);
        Kv<T>::put(kc, o + i + half, b * c + a * s);
        Kv<T>::put(vc, o + i, vr[o + i]);
        Kv<T>::put(vc, o + i + half, vr[o + i + half]);
    }
}

extern "C" __global__ void rope_cache_f32(float* q, const float* k, const float* v, float* k_pool,
                                          float* v_pool, int rows, const int* positions,
                                          const int* row_table, const int* tables, int heads,
                                          int kv_heads, int head_dim, const InvFreq inv_freq) {
    rope_cache<F32>(q, k, v, k_pool, v_pool, rows, positions, row_table, tables, heads, kv_heads,
                    head_dim, inv_freq);
}
extern "C" __global__ void rope_cache_bf16(float* q, const float* k, const float* v, u16* k_pool,
                                           u16* v_pool, int rows, const int* positions,
                                           const int* row_table, const int* tables, int heads,
                                           int kv_heads, int head_dim, const InvFreq inv_freq) {
    rope_cache<BF16>(q, k, v, k_pool, v_pool, rows, positions, row_table, tables, heads, kv_heads,
                     head_dim, inv_freq);
}
