// gemm_sm90.cu — the prefill matrix product on Hopper's warpgroup tensor-core instruction,
// `wgmma.mma_async` (sm_90a: H100, H200). Same contract as gemm.cu, whose tiles stay the path
// of every other device (and of this one when the check at open fails, kernels/src/wgmma.rs):
//
//   Y[i, j] = Σ_c X[i, c] · W[j, c]        X: [m, k] f32, W: [n, k] bf16/f16, Y: [m, n] f32
//
// with X rounded to the weight's 16-bit type as it is staged, f32 accumulation, the sum over k
// split as gemm.cu splits it (blockIdx.z, WG_BK = GEMM_BK), every output written once.
//
// A block is one or two warpgroups (4 warps, 128 threads each) computing a 64 × 128 or
// 128 × 128 tile of Y, each warpgroup 64 rows of it with one `wgmma.mma_async.m64n128k16` per
// 16 columns of k: A (its rows of the X tile) and B (the W tile, shared by the warpgroups) are
// both read by the tensor cores from shared memory through matrix descriptors; the
// accumulators, 64 f32 a thread, stay in registers. The k dimension is walked WG_BK = 32
// columns at a time:
//   * W tiles stream into a ring of STAGES buffers with `cp.async`, STAGES − 2 tiles ahead;
//   * X tiles (f32, rounded to 16 bits on the way) are read into registers one tile ahead and
//     stored into a ring of WG_A_SLOTS buffers after the tile's wgmma are issued;
//   * each tile's two wgmma are one wgmma group; the thread then waits until at most one
//     group (this tile's) is in flight, so the tensor cores run tile t while tile t − 1's
//     buffers are refilled. A buffer is rewritten only after the group that read it is
//     complete: W stage s is refilled STAGES − 2 tiles after its group, A slot s one after.
// Every tile shape gives each output the same sequence of wgmma over k, so the same bits.
// Before the `__syncthreads()` that publishes a tile, each thread's writes to shared memory
// (its X stores and its landed `cp.async` copies, both made by the generic proxy) are ordered
// before the tensor cores' reads (the async proxy) by `fence.proxy.async.shared::cta`.
//
// Shared-memory layout (PTX ISA, "Shared Memory Matrix Layout", K-major, no swizzle): a tile
// of R rows × 32 columns of 16-bit values is R / 8 × 4 "core matrices" of 8 rows × 8 columns
// (16 bytes a row, 128 bytes each, rows consecutive); core matrix (row group g, column group c)
// starts at byte (g · 4 + c) · 128. So the descriptor's leading-dimension byte offset (between
// the two core matrices of a k16 step, along k) is 128 and its stride-dimension byte offset
// (between row groups) is 512; the k16 step s starts at byte 256 s. In this layout the i-th
// 16-byte W chunk a block copies and the i-th 8 bytes of X it stores both land at i · 16 and
// i · 8: consecutive threads write consecutive bytes (no bank conflicts), and read whole
// 32-byte sectors of global memory.
//
// Accumulator layout (PTX ISA, "Matrix Fragments for wgmma.mma_async.m64nNk16"): register i of
// lane l of warp w (of the warpgroup) holds D[16 w + l / 4 + 8 ((i / 2) % 2)][8 (i / 4) +
// 2 (l % 4) + i % 2], D being the warpgroup's 64 rows.
//
// Compiled for every device so that the kernel table is the same everywhere; without sm_90a's
// features (`__CUDA_ARCH_FEAT_SM90_ALL`) the kernels trap, and the launch side never picks
// them there (kernels/src/shapes.rs `gemm_plan_for`).

#define WG_BK 32                          // k columns a tile (GEMM_BK of gemm.cu)
#define WG_ROWS 64                        // rows of X a warpgroup (the wgmma's m)
#define WG_BN 128                         // rows of W a block (the wgmma's n)
#define WG_THREADS 128                    // a warpgroup
#define WG_REGS (WG_ROWS * WG_BN / WG_THREADS)  // accumulators a thread
#define WG_A_SLOTS 3                      // X tiles: t − 1 (maybe in flight), t, t + 1
#define WG_B_BYTES (WG_BN * WG_BK * 2)
#define WG_LBO 128                        // bytes between core matrices along k
#define WG_SBO (WG_BK / 8 * 128)          // bytes between row groups

// A tile shape: WGS warpgroups (64 rows of X each) × 128 rows of W; STAGES W tiles in the ring
// (t − 1, maybe still read by a group in flight, t, and STAGES − 2 ahead).
template <int WGS_, int STAGES_>
struct WgShape {
    static constexpr int WGS = WGS_, STAGES = STAGES_;
    static constexpr int BM = WG_ROWS * WGS, THREADS = WG_THREADS * WGS;
    static constexpr int A_BYTES = BM * WG_BK * 2;
    static constexpr int XS = BM * 8 / THREADS, WS = WG_BN * 4 / THREADS;  // a thread's float4 / chunks
    static_assert(STAGES >= 3, "a W stage for the group in flight, the tile, and one ahead");
    static_assert(WG_A_SLOTS * A_BYTES + STAGES * WG_B_BYTES <= 48 * 1024, "static shared memory");
};

#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_HAS_WGMMA 1
#else
#define WG_HAS_WGMMA 0
#endif

// The matrix descriptor of a tile in the layout above (PTX ISA, "Matrix Descriptor Format"):
// bits 0-13 the start address >> 4, 16-29 the leading-dimension byte offset >> 4, 32-45 the
// stride-dimension byte offset >> 4; base offset 0 and no swizzle (bits 49-51, 62-63).
__device__ __forceinline__ unsigned long long wg_desc(u32 addr) {
    return (unsigned long long)((addr & 0x3ffffu) >> 4) | (unsigned long long)(WG_LBO >> 4) << 16 |
           (unsigned long long)(WG_SBO >> 4) << 32;
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// Waits until at most N of the warpgroup's committed wgmma groups are in flight.
template <int N>
__device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Orders this thread's generic-proxy writes to shared memory before async-proxy reads (wgmma).
__device__ __forceinline__ void wg_fence_shared() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
// Keeps the compiler from moving register accesses of `v` across it (the accumulators are
// written by the tensor cores until a wait).
__device__ __forceinline__ void wg_fence_operand(float& v) { asm volatile("" : "+f"(v)::"memory"); }

#if WG_HAS_WGMMA

// D += A · Bᵀ over one k16 step for the warpgroup: A 64 × 16 and B 128 × 16, both K-major in
// shared memory (descriptors a and b); scale-d 1 (accumulate), no negation, no transposes.
template <typename T> struct Wgmma;

template <> struct Wgmma<BF16> {
    __device__ __forceinline__ static void run(float d[WG_REGS], unsigned long long a, unsigned long long b) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
            "%64, %65, p, 1, 1, 0, 0;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
              "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
              "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
              "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
              "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
              "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
              "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
              "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
            : "l"(a), "l"(b), "n"(1));
    }
};

template <> struct Wgmma<F16> {
    __device__ __forceinline__ static void run(float d[WG_REGS], unsigned long long a, unsigned long long b) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
            "%64, %65, p, 1, 1, 0, 0;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
              "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
              "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
              "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
              "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
              "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
              "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
              "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
            : "l"(a), "l"(b), "n"(1));
    }
};

// X tile k0.. of this block: BM rows × 8 float4, float4 i of the tile is row 8 (i / 64) +
// (i % 16) / 2, columns 8 ((i / 16) % 4) + 4 (i % 2) (so that its 8 bytes once rounded go to
// byte 8 i of the tile, see the layout above); thread t takes float4 t, t + THREADS, ...
template <typename S>
struct WgX {
    float v[S::XS][4];
};

__device__ __forceinline__ int wg_x_row(int i) { return 8 * (i / 64) + (i % 16) / 2; }
__device__ __forceinline__ int wg_x_col(int i) { return 8 * ((i / 16) % 4) + 4 * (i % 2); }

template <typename S>
__device__ __forceinline__ void wg_load_x(WgX<S>& x, const float* X, int m0, int m, int k, int ke,
                                          int k0, bool vec) {
#pragma unroll
    for (int s = 0; s < S::XS; s++) {
        const int i = threadIdx.x + s * S::THREADS;
        load_x4(x.v[s], X, m0 + wg_x_row(i), k0 + wg_x_col(i), m, k, ke, vec);
    }
}

template <typename T, typename S>
__device__ __forceinline__ void wg_store_x(const WgX<S>& x, u32* As) {
#pragma unroll
    for (int s = 0; s < S::XS; s++) {
        const int i = threadIdx.x + s * S::THREADS;
        u32* d = As + 2 * i;
        d[0] = Mma<T>::pack(x.v[s][0], x.v[s][1]);
        d[1] = Mma<T>::pack(x.v[s][2], x.v[s][3]);
    }
}

// W tile k0.. into Bs: 128 rows × 4 chunks of 8 halves; chunk i of the tile is row
// 8 (i / 32) + i % 8, columns 8 ((i / 8) % 4), and goes to byte 16 i. With `vec` (k % 8 == 0,
// W 16-byte aligned) a chunk is wholly inside or outside the matrix and travels by cp.async;
// otherwise element-wise.
template <typename S>
__device__ __forceinline__ void wg_load_w(u32* Bs, const u16* W, int n0, int n, int k, int ke,
                                          int k0, bool vec) {
#pragma unroll
    for (int s = 0; s < S::WS; s++) {
        const int i = threadIdx.x + s * S::THREADS;
        stage_w8(Bs + 4 * i, W, n0 + 8 * (i / 32) + i % 8, k0 + 8 * ((i / 8) % 4), n, k, ke, vec);
    }
}

template <typename T, typename S>
__device__ void gemm_wg(const float* X, const u16* W, float* Y, int m, int n, int k, int k_split) {
    // One object, so that the emulator can place every descriptor's address (kernels/emu).
    __shared__ struct {
        uint4 a[WG_A_SLOTS * S::A_BYTES / 16];  // X tiles
        uint4 b[S::STAGES * WG_B_BYTES / 16];   // W tiles, the cp.async ring
    } tiles_;
    u32* As = reinterpret_cast<u32*>(tiles_.a);
    u32* Bs = reinterpret_cast<u32*>(tiles_.b);

    const int m0 = blockIdx.y * S::BM, n0 = blockIdx.x * WG_BN;
    const int group = threadIdx.x / WG_THREADS;  // this thread's warpgroup: rows 64 group..
    const bool xvec = k % 4 == 0 && (unsigned long long)X % 16 == 0;
    const bool wvec = k % 8 == 0 && (unsigned long long)W % 16 == 0;
    const int kb = blockIdx.z * k_split, ke = min(k, kb + k_split);
    Y += (long long)blockIdx.z * m * n;
    const int tiles = (ke - kb + WG_BK - 1) / WG_BK;

    float acc[WG_REGS];
#pragma unroll
    for (int i = 0; i < WG_REGS; i++) acc[i] = 0.0f;

    // Prologue: W tiles 0 .. STAGES − 3 in flight (one group each, empty past the end), X tile
    // 0 stored.
#pragma unroll
    for (int s = 0; s < S::STAGES - 2; s++) {
        if (s < tiles) wg_load_w<S>(Bs + s * (WG_B_BYTES / 4), W, n0, n, k, ke, kb + s * WG_BK, wvec);
        cp_async_commit();
    }
    WgX<S> x;
    wg_load_x<S>(x, X, m0, m, k, ke, kb, xvec);
    wg_store_x<T, S>(x, As);

    for (int t = 0; t < tiles; t++) {
        cp_async_wait<S::STAGES - 3>();  // this thread's copies of W tile t have landed
        wg_fence_shared();               // its X stores and landed copies, before wgmma reads
        __syncthreads();                 // everyone's
        // Refill the stage of tile t − 2, whose group completed before the last iteration ended.
        const int next = t + S::STAGES - 2;
        if (next < tiles)
            wg_load_w<S>(Bs + (next % S::STAGES) * (WG_B_BYTES / 4), W, n0, n, k, ke, kb + next * WG_BK, wvec);
        cp_async_commit();
        if (t + 1 < tiles) wg_load_x<S>(x, X, m0, m, k, ke, kb + (t + 1) * WG_BK, xvec);

        // This warpgroup's 64 rows of the X tile (8 row groups on), and the whole W tile.
        const u32 a = smem_addr(As + (t % WG_A_SLOTS) * (S::A_BYTES / 4)) + group * (WG_ROWS / 8) * WG_SBO;
        const u32 b = smem_addr(Bs + (t % S::STAGES) * (WG_B_BYTES / 4));
        wg_fence();
#pragma unroll
        for (int s = 0; s < WG_BK / 16; s++) Wgmma<T>::run(acc, wg_desc(a + 2 * WG_LBO * s), wg_desc(b + 2 * WG_LBO * s));
        wg_commit();
        wg_wait<1>();  // tile t − 1's group is complete: its X slot may be rewritten
        if (t + 1 < tiles) wg_store_x<T, S>(x, As + ((t + 1) % WG_A_SLOTS) * (S::A_BYTES / 4));
    }
    wg_wait<0>();
    cp_async_wait<0>();  // no copy outlives the block (only empty groups remain here)
#pragma unroll
    for (int i = 0; i < WG_REGS; i++) wg_fence_operand(acc[i]);

    const int lane = threadIdx.x % WARP, warp = (threadIdx.x / WARP) % 4;
#pragma unroll
    for (int i = 0; i < WG_REGS; i++) {
        const int r = m0 + WG_ROWS * group + 16 * warp + lane / 4 + 8 * ((i / 2) % 2);
        const int c = n0 + 8 * (i / 4) + 2 * (lane % 4) + i % 2;
        if (r < m && c < n) Y[(long long)r * n + c] = acc[i];
    }
}

#endif  // WG_HAS_WGMMA

template <typename T, typename S>
__device__ __forceinline__ void gemm_wg_or_trap(const float* X, const u16* W, float* Y, int m, int n,
                                                int k, int k_split) {
#if WG_HAS_WGMMA
    gemm_wg<T, S>(X, W, Y, m, n, k, k_split);
#else
    asm volatile("trap;");
#endif
}

// The entry points, gemm_wg_<BM>x128_{bf16,f16} (kernels/src/shapes.rs GEMM_WG_TILES).
#define GEMM_WG_ENTRY(NAME, T, WGS, STAGES)                                                     \
    extern "C" __global__ void __launch_bounds__(WG_THREADS * WGS)                              \
        NAME(const float* X, const u16* W, float* Y, int m, int n, int k, int k_split) {        \
        stream_wait();                                                                          \
        gemm_wg_or_trap<T, WgShape<WGS, STAGES> >(X, W, Y, m, n, k, k_split);                   \
    }
GEMM_WG_ENTRY(gemm_wg_64x128_bf16, BF16, 1, 4)
GEMM_WG_ENTRY(gemm_wg_64x128_f16, F16, 1, 4)
GEMM_WG_ENTRY(gemm_wg_128x128_bf16, BF16, 2, 3)
GEMM_WG_ENTRY(gemm_wg_128x128_f16, F16, 2, 3)
