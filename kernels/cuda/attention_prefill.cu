// attention_prefill.cu — causal GQA attention of prompt rows on tensor cores, over a bf16 KV pool
// (the cache of BF16/F16 models), flash-attention style.
//
// The prompt rows of a pass come as runs of one sequence at consecutive positions; the host cuts
// them into tiles of at most PF_ROWS rows (`tiles`: first row and row count of each) and the
// grid is (heads, tiles). For row r at position p and head h (kv head g = h / (heads /
// kv_heads)) the result is that of attention.cu: softmax over keys t ≤ p of (q·K[t]) / sqrt(D),
// times V. Here:
//   * each of the PF_WARPS warps takes 16 rows of the tile; its Q rows are rounded to bf16 into
//     `mma.m16n8k16` A fragments once (registers), as the prefill GEMM rounds its activations;
//   * keys are walked PF_KEYS at a time from position 0: the block copies the key and value rows
//     of those positions from the paged pool into shared memory with cp.async (16 bytes a copy;
//     rows past the tile's last position zero-filled), then each warp computes S = Q Kᵀ
//     (ldmatrix.x4 of K rows gives the B fragments), masks keys past each row's position, and
//     folds the block into its running maximum m, sum l and output O (f32 accumulators, "online
//     softmax"); P = exp(S − m), rounded to bf16, is the A operand of O += P V straight from the
//     S accumulators (the C fragment of m16n8k16 is laid out as the A fragment needs), and V's B
//     fragments come from ldmatrix.x4.trans of V rows;
//   * at the end each lane adds its part of l over the 4 lanes of its row and writes O / l.
// A row's sums run over the key blocks in position order whatever tile or batch it is in (blocks
// wholly past a row's position leave m, l and O exactly as they were): deterministic, and the
// same for a prompt prefilled whole or in chunks. Heads of 64 and 128 only (`attn_prefill_d64`,
// `attn_prefill_d128`); other widths and f32 pools take attention.cu's kernel.
//
// Fragment layouts as in gemm.cu (PTX ISA, m16n8k16, g = lane / 4, t = lane % 4):
//   S = Q Kᵀ: B[k = dim][n = key] = K[key][dim] → b0 = K[g][2t..2t+1] (a K row: ldmatrix);
//   O = P V:  B[k = key][n = dim] = V[key][dim] → b0 = (V[2t][g], V[2t+1][g]) (a column of V
//             rows: ldmatrix .trans, which gives lane l row-pair 2(l%4), 2(l%4)+1 of column l/4).

#define PF_WARPS 4
#define PF_ROWS (PF_WARPS * 16)
#define PF_KEYS 64
#define PF_THREADS (PF_WARPS * WARP)

template <int D>
__device__ void attn_prefill(const float* q, const u16* k_pool, const u16* v_pool, float* out,
                             const int* positions, const int* row_table, const int* tables,
                             const int* tiles, int heads, int kv_heads, float scale) {
    constexpr int LD = D + 8;  // padded shared row, in halves: ldmatrix rows in distinct banks
    __shared__ uint4 Ks_[PF_KEYS * LD / 8];
    __shared__ uint4 Vs_[PF_KEYS * LD / 8];
    u16* Ks = reinterpret_cast<u16*>(Ks_);
    u16* Vs = reinterpret_cast<u16*>(Vs_);

    const int h = blockIdx.x, tile = blockIdx.y;
    const int first = tiles[2 * tile], count = tiles[2 * tile + 1];
    const int kvh = h / (heads / kv_heads);
    const int q_dim = heads * D, kv_dim = kv_heads * D;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int g = lane / 4, t = lane % 4;
    const int* table = tables + row_table[first];
    const int p0 = positions[first], p_last = p0 + count - 1;
    // This lane's two rows of the tile (rows past `count` are padding: zero Q, never written).
    const int row[2] = {warp * 16 + g, warp * 16 + g + 8};
    const int pos[2] = {p0 + row[0], p0 + row[1]};

    u32 qf[D / 16][4];
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = row[i % 2], c = ks * 16 + 2 * t + (i / 2) * 8;
            float lo = 0.0f, hi = 0.0f;
            if (r < count) {
                const float* src = q + (long long)(first + r) * q_dim + h * D + c;
                lo = src[0], hi = src[1];
            }
            qf[ks][i] = pack_bf16x2(lo, hi);
        }
    }

    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};

    // ldmatrix row addresses of this lane within a block: matrix qm = lane / 8, row r8.
    const int qm = lane / 8, r8 = lane % 8;

    for (int k0 = 0; k0 <= p_last; k0 += PF_KEYS) {
        __syncthreads();  // every warp is done with the previous block's K and V
        for (int idx = threadIdx.x; idx < PF_KEYS * (D / 8); idx += PF_THREADS) {
            const int key = idx / (D / 8), c = (idx % (D / 8)) * 8;
            const int tp = k0 + key;
            const bool inside = tp <= p_last;
            long long off = 0;
            if (inside) off = ((long long)table[tp / KV_BLOCK] * KV_BLOCK + tp % KV_BLOCK) * kv_dim + kvh * D + c;
            cp_async16(smem_addr(Ks + key * LD + c), k_pool + off, inside ? 16 : 0);
            cp_async16(smem_addr(Vs + key * LD + c), v_pool + off, inside ? 16 : 0);
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();

        // S = Q Kᵀ over this block's keys: 8 tiles of 8 keys.
        float s[PF_KEYS / 8][4];
#pragma unroll
        for (int j = 0; j < PF_KEYS / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
#pragma unroll
            for (int jj = 0; jj < PF_KEYS / 16; jj++) {
                u32 r[4];
                ldmatrix_x4(r, smem_addr(Ks + (jj * 16 + (qm / 2) * 8 + r8) * LD + ks * 16 + (qm % 2) * 8));
                Mma<BF16>::run(s[2 * jj], qf[ks], r);
                Mma<BF16>::run(s[2 * jj + 1], qf[ks], r + 2);
            }
        }

        // Scale, mask keys past each row's position, and fold into (m, l, O).
#pragma unroll
        for (int half = 0; half < 2; half++) {
            float mx = NEG_INF;
#pragma unroll
            for (int j = 0; j < PF_KEYS / 8; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int key = k0 + j * 8 + 2 * t + e;
                    float& v = s[j][2 * half + e];
                    v = key <= pos[half] ? v * scale : NEG_INF;
                    mx = fmaxf(mx, v);
                }
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
            const float m_new = fmaxf(m[half], mx);  // finite: key 0 is never masked
            const float corr = __expf(m[half] - m_new);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < PF_KEYS / 8; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float& v = s[j][2 * half + e];
                    v = __expf(v - m_new);
                    sum += v;
                }
            l[half] = l[half] * corr + sum;
#pragma unroll
            for (int j = 0; j < D / 8; j++) {
                o[j][2 * half] *= corr;
                o[j][2 * half + 1] *= corr;
            }
            m[half] = m_new;
        }

        // O += P V, 16 keys a step.
#pragma unroll
        for (int kk = 0; kk < PF_KEYS / 16; kk++) {
            const u32 a[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                              pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dd = 0; dd < D / 16; dd++) {
                u32 r[4];
                ldmatrix_x4_trans(r, smem_addr(Vs + (kk * 16 + (qm % 2) * 8 + r8) * LD + dd * 16 + (qm / 2) * 8));
                Mma<BF16>::run(o[2 * dd], a, r);
                Mma<BF16>::run(o[2 * dd + 1], a, r + 2);
            }
        }
    }

#pragma unroll
    for (int half = 0; half < 2; half++) {
        float total = l[half];
        total += __shfl_xor_sync(FULL_MASK, total, 1);
        total += __shfl_xor_sync(FULL_MASK, total, 2);
        const float inv = 1.0f / total;
        if (row[half] < count) {
            float* dst = out + (long long)(first + row[half]) * q_dim + h * D + 2 * t;
#pragma unroll
            for (int j = 0; j < D / 8; j++) {
                dst[j * 8] = o[j][2 * half] * inv;
                dst[j * 8 + 1] = o[j][2 * half + 1] * inv;
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(PF_THREADS)
    attn_prefill_d64(const float* q, const u16* k_pool, const u16* v_pool, float* out,
                     const int* positions, const int* row_table, const int* tables,
                     const int* tiles, int heads, int kv_heads, float scale) {
    stream_wait();
    attn_prefill<64>(q, k_pool, v_pool, out, positions, row_table, tables, tiles, heads, kv_heads,
                     scale);
}
extern "C" __global__ void __launch_bounds__(PF_THREADS)
    attn_prefill_d128(const float* q, const u16* k_pool, const u16* v_pool, float* out,
                      const int* positions, const int* row_table, const int* tables,
                      const int* tiles, int heads, int kv_heads, float scale) {
    stream_wait();
    attn_prefill<128>(q, k_pool, v_pool, out, positions, row_table, tables, tiles, heads,
                      kv_heads, scale);
}
