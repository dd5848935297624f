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
// Threads: grid (rows, ⌈(heads + kv_heads) · d/2 / ROPE_THREADS⌉); each thread turns one pair:
// the first heads · d/2 are q's, the rest k's (with the pair's values copied to the pool), so
// a decode row's pairs all turn at once rather than a few threads looping over them.
// The pool holds f32 (`rope_cache_f32`) or bf16 (`rope_cache_bf16`, rounded to nearest even).

#define ROPE_MAX_HALF 256
#define ROPE_THREADS 128

struct InvFreq {
    float f[ROPE_MAX_HALF];
};

template <typename T>
__device__ void rope_cache(float* q, const float* k, const float* v, typename Kv<T>::Storage* k_pool,
                           typename Kv<T>::Storage* v_pool, int rows, const int* positions,
                           const int* row_table, const int* tables, int heads, int kv_heads,
                           int head_dim, const InvFreq& inv_freq) {
    const int r = blockIdx.x;
    const int half = head_dim / 2;
    const int idx = blockIdx.y * blockDim.x + threadIdx.x;
    if (r >= rows || idx >= (heads + kv_heads) * half) return;
    const int pos = positions[r];
    const int q_dim = heads * head_dim, kv_dim = kv_heads * head_dim;
    if (idx < heads * half) {
        const int h = idx / half, i = idx % half;
        float s, c;
        sincosf((float)pos * inv_freq.f[i], &s, &c);
        float* head = q + (long long)r * q_dim + h * head_dim;
        const float a = head[i], b = head[i + half];
        head[i] = a * c - b * s;
        head[i + half] = b * c + a * s;
        return;
    }
    const int kv_idx = idx - heads * half;
    const int h = kv_idx / half, i = kv_idx % half;
    float s, c;
    sincosf((float)pos * inv_freq.f[i], &s, &c);
    const long long slot = (long long)tables[row_table[r] + pos / KV_BLOCK] * KV_BLOCK + pos % KV_BLOCK;
    const int o = h * head_dim;
    const float* kr = k + (long long)r * kv_dim + o;
    const float* vr = v + (long long)r * kv_dim + o;
    typename Kv<T>::Storage* kc = k_pool + slot * kv_dim + o;
    typename Kv<T>::Storage* vc = v_pool + slot * kv_dim + o;
    const float a = kr[i], b = kr[i + half];
    Kv<T>::put(kc, i, a * c - b * s);
    Kv<T>::put(kc, i + half, b * c + a * s);
    Kv<T>::put(vc, i, vr[i]);
    Kv<T>::put(vc, i + half, vr[i + half]);
}

extern "C" __global__ void rope_cache_f32(float* q, const float* k, const float* v, float* k_pool,
                                          float* v_pool, int rows, const int* positions,
                                          const int* row_table, const int* tables, int heads,
                                          int kv_heads, int head_dim, const InvFreq inv_freq) {
    stream_order();
    rope_cache<F32>(q, k, v, k_pool, v_pool, rows, positions, row_table, tables, heads, kv_heads,
                    head_dim, inv_freq);
}
extern "C" __global__ void rope_cache_bf16(float* q, const float* k, const float* v, u16* k_pool,
                                           u16* v_pool, int rows, const int* positions,
                                           const int* row_table, const int* tables, int heads,
                                           int kv_heads, int head_dim, const InvFreq inv_freq) {
    stream_order();
    rope_cache<BF16>(q, k, v, k_pool, v_pool, rows, positions, row_table, tables, heads, kv_heads,
                     head_dim, inv_freq);
}
