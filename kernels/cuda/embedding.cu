// embedding.cu — token embedding gather, and the gather of the rows that get logits.
//
//   out[r, :] = f32(table[ids[r], :])        for r in 0..rows
//
// Threads: one block per row r; the block's threads stride over the `width` columns, so
// consecutive threads read consecutive elements (coalesced). An id outside the vocabulary (the
// caller checks ids, so this is a defect) writes NaN to the whole row rather than reading
// out of bounds, so the error cannot pass silently.

template <typename T>
__device__ void embed(const typename T::Storage* table, const u32* ids, float* out, int rows,
                      int width, int vocab) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const u32 id = ids[r];
    float* dst = out + (long long)r * width;
    if (id >= (u32)vocab) {
        for (int c = threadIdx.x; c < width; c += blockDim.x) dst[c] = QNAN;
        return;
    }
    const typename T::Storage* src = table + (long long)id * width;
    for (int c = threadIdx.x; c < width; c += blockDim.x) dst[c] = Weight<T>::get(src, c);
}

extern "C" __global__ void embed_f32(const float* table, const u32* ids, float* out, int rows,
                                     int width, int vocab) {
    stream_order();
    embed<F32>(table, ids, out, rows, width, vocab);
}
extern "C" __global__ void embed_bf16(const u16* table, const u32* ids, float* out, int rows,
                                      int width, int vocab) {
    stream_order();
    embed<BF16>(table, ids, out, rows, width, vocab);
}
extern "C" __global__ void embed_f16(const u16* table, const u32* ids, float* out, int rows,
                                     int width, int vocab) {
    stream_order();
    embed<F16>(table, ids, out, rows, width, vocab);
}

// gather_rows: out[i, :] = x[rows[i], :] for i in 0..count — the rows of a pass that get
// logits, picked by indices staged in device memory (so a recorded step can replay it).
// Threads: one block per output row, threads striding over the columns.
extern "C" __global__ void gather_rows(const float* x, const int* rows, float* out, int count,
                                       int width) {
    stream_order();
    const int i = blockIdx.x;
    if (i >= count) return;
    const float* src = x + (long long)rows[i] * width;
    float* dst = out + (long long)i * width;
    for (int c = threadIdx.x; c < width; c += blockDim.x) dst[c] = src[c];
}
