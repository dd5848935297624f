// rope.cu — rotary position embedding fused with the KV-cache write.
//
// For row r at position p = pos0 + r and each head, pairs (i, i + d/2) of the head's d values
// (the rotate-half pairing of Hugging Face LLaMA) turn by the angle p · inv_freq[i]:
//   a' = a·cos − b·sin,   b' = b·cos + a·sin
// q is rotated in place; k is rotated as it is written to k_cache[p]; v is copied to
// v_cache[p]. k_cache/v_cache point at this layer's [max_positions, kv_dim] slab.
//
// The frequency table (d/2 ≤ ROPE_MAX_HALF floats, llama3 scaling already applied on the host)
// travels by value as a kernel parameter, so the launch needs no upload and can be replayed
// in a CUDA graph. The first position is read from device memory (`*pos0p`, staged by the host
// before the pass) for the same reason: a recorded decode step replays at a new position.
//
// Threads: one block per row; threads stride over the (head, i) pairs of q, then of k/v.

#define ROPE_MAX_HALF 256

struct InvFreq {
    float f[ROPE_MAX_HALF];
};

extern "C" __global__ void rope_cache(float* q, const float* k, const float* v, float* k_cache,
                                      float* v_cache, int rows, const int* pos0p, int heads,
                                      int kv_heads, int head_dim, const InvFreq inv_freq) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const int half = head_dim / 2;
    const int pos = *pos0p + r;
    const int q_dim = heads * head_dim, kv_dim = kv_heads * head_dim;

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
    float* kc = k_cache + (long long)pos * kv_dim;
    float* vc = v_cache + (long long)pos * kv_dim;
    for (int idx = threadIdx.x; idx < kv_heads * half; idx += blockDim.x) {
        const int h = idx / half, i = idx % half;
        float s, c;
        sincosf((float)pos * inv_freq.f[i], &s, &c);
        const int o = h * head_dim;
        const float a = kr[o + i], b = kr[o + i + half];
        kc[o + i] = a * c - b * s;
        kc[o + i + half] = b * c + a * s;
        vc[o + i] = vr[o + i];
        vc[o + i + half] = vr[o + i + half];
    }
}
