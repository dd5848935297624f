// emu.h — the CUDA execution model on the CPU, for ci/cuda-emu (docs/cuda.md, "CPU emulation").
//
// The kernels of kernels/cuda/ are compiled unchanged by a host C++ compiler after this header:
//   * each CUDA thread is a fiber (its own stack) on one host thread; the blocks of a launch
//     run one after another; a thread runs until it waits at a barrier (`__syncthreads()`, or a
//     warp's for a shuffle, `mma`, `ldmatrix`, `__syncwarp()`) or returns, then the next ready
//     thread runs; a block whose threads all wait is a deadlock, reported as an error. Under
//     ThreadSanitizer each fiber is a thread of its own whose accesses only barriers order;
//   * `__shared__` variables are `static`: one copy, used by one block at a time;
//   * `__syncthreads()` is a real barrier over the block's threads; a thread that has returned
//     from the kernel leaves the block's barriers (as on the hardware, where exited threads no
//     longer count); threads waiting at different `__syncthreads()` calls are an error;
//   * warp shuffles exchange values through the warp's slots between two barriers of its 32
//     threads; a shuffle that reads a lane that has exited, or with another mask than all 32
//     lanes, is reported as an error (the hardware's result would be undefined);
//   * inline PTX (`asm`) is rewritten by the driver (bench/src/bin/cuda-emu.rs) into calls of
//     `emu_ptx`, which implements the instructions the kernels use from the PTX ISA: `cvt` to
//     and from f16/bf16, `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32`
//     with its fragment layouts, `ldmatrix` (x1/x2/x4, .trans) with its row-address and fragment
//     layout, `cp.async` with its groups (a copy lands only when its group is waited for),
//     `prefetch.global.L2` (no effect; its address must lie inside a buffer of the launch),
//     and Hopper's `wgmma` (`fence`, `commit_group`, `wait_group`, and `mma_async` of
//     m64nNk16 with both operands in shared memory through matrix descriptors, K-major, no
//     swizzle, its accumulator fragment layout; an operation's operands, read at the issue, must
//     be unchanged when its group is waited for, where its accumulators are written) with
//     `fence.proxy.async.shared::cta`.
//     Any other instruction is an error naming it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
typedef dim3 uint3;

extern uint3 threadIdx;  // the running thread's, set at each switch
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };

namespace emu {
uint32_t shared_offset(const void* p);
}

// Shared-memory addresses as 32-bit values, as `__cvta_generic_to_shared` gives them on the
// device: here the offset of the (static, see `__shared__` above) variable from an anchor in
// the same executable, turned back into a pointer by the emulated PTX (the runtime also notes
// it as the thread's last shared address, to place the 18 address bits of a wgmma matrix
// descriptor).
inline size_t __cvta_generic_to_shared(const void* p) { return (size_t)emu::shared_offset(p); }

namespace emu {
void syncthreads(const char* file, int line);
void warp_sync();
uint32_t shuffle(uint32_t mask, uint32_t bits, int src_lane);
[[noreturn]] void fail(const std::string& why);
void ptx(const char* text, void** outs, const int* out_sizes, int n_out, void** ins,
         const int* in_sizes, int n_in);
}  // namespace emu

// A macro, so that the barrier knows where each thread waits: threads of one block waiting at
// different `__syncthreads()` (a divergent barrier) are an error.
#define __syncthreads() emu::syncthreads(__FILE__, __LINE__)
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_sync(); }

template <typename T>
inline uint32_t emu_bits(T v) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    uint32_t b;
    std::memcpy(&b, &v, 4);
    return b;
}
template <typename T>
inline T emu_from_bits(uint32_t b) {
    T v;
    std::memcpy(&v, &b, 4);
    return v;
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int = 32) {
    const int lane = (int)(threadIdx.x % 32);
    return emu_from_bits<T>(emu::shuffle(mask, emu_bits(v), lane ^ lane_mask));
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int = 32) {
    return emu_from_bits<T>(emu::shuffle(mask, emu_bits(v), src & 31));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int = 32) {
    const int lane = (int)(threadIdx.x % 32);
    const int src = lane + (int)delta;
    return emu_from_bits<T>(emu::shuffle(mask, emu_bits(v), src < 32 ? src : lane));
}

// Warp votes: each lane's predicate through the warp's slots, as a shuffle does.
inline unsigned __ballot_sync(unsigned mask, int pred) {
    const uint32_t mine = pred ? 1u : 0u;
    unsigned r = 0;
    for (int l = 0; l < 32; l++) r |= emu::shuffle(mask, mine, l) << l;
    return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == 0xffffffffu; }

inline float __int_as_float(int i) { return emu_from_bits<float>((uint32_t)i); }
inline float __uint_as_float(unsigned u) { return emu_from_bits<float>(u); }
inline int __float_as_int(float f) { return (int)emu_bits(f); }
inline unsigned __float_as_uint(float f) { return emu_bits(f); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// expf, fmaf, fmaxf, fminf, sqrtf and sincosf are the C library's (<math.h>, GNU).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
