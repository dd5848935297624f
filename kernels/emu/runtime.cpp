// runtime.cpp — the emulator's threads, barriers, shuffles and PTX instructions, and the
// launch server the driver (bench/src/bin/cuda-emu.rs) talks to over stdin/stdout:
//
//   request:  u32 name length, name, u32 grid[3], u32 block[3], u32 argument count, then per
//             argument u8 kind (0 buffer, 1 scalar), u64 length, bytes
//   response: u8 status (0 ok, 1 error), then either every buffer argument back in order
//             (u64 length, bytes), or u64 message length and the message
//
// A kernel error (an unknown instruction, a shuffle reading an exited lane, a bad argument
// list) answers status 1 and the server goes on with the next launch.
#include <pthread.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "emu.h"
#include "launch.h"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define EMU_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

// The scheduler's own bookkeeping (which thread waits where, which runs next) is hidden from
// ThreadSanitizer: all it sees of the scheduler are the happens-before edges of the barriers
// (`__tsan_release` on arrival, `__tsan_acquire` on leaving), so that accesses that no barrier
// orders are reported as races, as they would be races on the device. Its functions touch
// plain fields and raw pointers only (a library call would be instrumented).
#define EMU_SCHEDULER __attribute__((no_sanitize("thread")))

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace {

struct KernelError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// cp.async of one thread: copies issued since the last commit, and the committed groups in
// order. A copy reads its source when issued and writes its destination only when its group
// completes (cp.async.wait_group / wait_all): shared memory read before the wait sees the old
// bytes, as it may on the hardware.
struct AsyncCopy {
    unsigned char* dst;
    unsigned char bytes[16];
    int size;
};

// One wgmma.mma_async of one thread, kept until its group is waited for: the tensor cores
// read shared memory and write the accumulators at any time between the issue and the wait,
// so the emulator reads the operands at both and requires them unchanged (a kernel that
// rewrites an operand in flight is an error, whichever value it meant), and writes the
// accumulators at the wait (a kernel that reads them too early gets other results). `d` points
// at the thread's accumulator registers (the kernel's variables, alive until it returns).
struct WgmmaOp {
    std::vector<float*> d;
    uint64_t a, b;  // matrix descriptors
    bool accumulate, bf16;
    int n;
    uint32_t near;  // the thread's last converted shared address, to place the descriptors'
                    // 18 address bits (see `descriptor_address`)
    std::vector<uint16_t> issued;  // the operands this thread's part reads, as at the issue
};

// The kernels, registered by each translation unit's static `emu::Registration` (a function's
// static, so that it exists before any of them runs).
std::vector<const emu::Entry*>& entries() {
    static std::vector<const emu::Entry*> table;
    return table;
}

// The global-memory buffers of the running launch (address, length), for the instructions that
// name an address without reading it (prefetch): one outside them is an error.
std::vector<std::pair<const unsigned char*, uint64_t>> launch_buffers;

// One CUDA thread: a fiber with its own stack, run on the one host thread until it waits at
// a barrier or returns from the kernel.
struct Warp;
struct Fiber {
    ucontext_t ctx;
    Warp* warp = nullptr;
    char* stack = nullptr;  // STACK bytes, the lowest page a guard
    int tid = 0;
    uint3 idx{};
    bool done = false;
    Fiber* next = nullptr;            // the next waiter at the same barrier
    const char* waits_at = nullptr;   // what it waits at (for a deadlock's report)
    std::vector<AsyncCopy> uncommitted;
    std::vector<std::vector<AsyncCopy>> groups;
    std::vector<WgmmaOp> wg_uncommitted;  // wgmma.mma_async since the last commit
    std::vector<std::vector<WgmmaOp>> wg_groups;
    bool wg_fenced = false;  // a wgmma.fence since the last wgmma.wait_group
    bool copies_unfenced = false;  // cp.async copies landed since the last fence.proxy.async
    uint32_t last_shared = 0;  // the last address `__cvta_generic_to_shared` gave this thread
#if EMU_TSAN
    void* tsan = nullptr;
#endif
};

constexpr size_t STACK = 256 << 10, GUARD_PAGE = 4096;

// A barrier whose number of participants shrinks as threads leave (return from the kernel).
struct Barrier {
    int expected = 0, arrived = 0;
    unsigned generation = 0;
    Fiber* first = nullptr;  // the waiters, in order of arrival
    Fiber* last = nullptr;
    const char* site_file = nullptr;  // where the threads of this generation wait
    int site_line = 0;
    char sync[2];  // ThreadSanitizer's synchronisation object of even and odd generations

    void reset(int n);
    void arrive_and_wait(const char* what, const char* file = nullptr, int line = 0);
    void leave();
    void release_all();
};

struct Warp {
    Barrier barrier;
    std::array<uint32_t, 32> slots{};
    bool alive[32] = {};
    std::array<uint32_t, 32 * 10> mma{};  // a[4], b[2], c[4] of each lane
    std::array<float, 32 * 4> d{};        // d[4] of each lane, computed once for the warp
    std::array<uint32_t, 32> rows{};      // ldmatrix: each lane's row address
};

// One launch: its threads' fibers, their barriers, and the queue of fibers ready to run.
struct Launch {
    const emu::Entry* entry = nullptr;
    void** args = nullptr;
    int threads = 0;
    Barrier block;
    std::vector<std::unique_ptr<Warp>> warps;
    std::unique_ptr<Fiber[]> fibers;
    std::vector<Fiber*> ready_slots;
    Fiber** ready = nullptr;  // a ring of `threads` slots
    size_t ready_head = 0, ready_count = 0;
    int finished = 0;
    ucontext_t host;  // the launch's own (host) side, where a block starts and ends
    void* host_stack = nullptr;
    size_t host_stack_size = 0;
#if EMU_TSAN
    void* host_tsan = nullptr;
#endif
    char start = 0, done = 0;  // ThreadSanitizer: the host's writes before a block, the threads' after
    std::string error;
};

Launch* current = nullptr;
Fiber* running = nullptr;  // nullptr: the host side
int tid = 0;

Warp& my_warp() { return *current->warps[tid / 32]; }

// Fiber stacks, kept from launch to launch.
std::vector<char*> stacks;

char* stack_for(size_t i) {
    while (stacks.size() <= i) {
        void* p = mmap(nullptr, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) throw KernelError("no memory for the stack of a thread");
        mprotect(p, GUARD_PAGE, PROT_NONE);  // an overflow faults instead of writing below
        stacks.push_back((char*)p);
    }
    return stacks[i];
}

// Leaves the running fiber (`from`, nullptr for the host side) for `to` (nullptr: the host).
// `dying`: `from` has returned from the kernel and never runs again.
EMU_SCHEDULER void switch_to(Fiber* from, Fiber* to, bool dying = false) {
    Launch& L = *current;
    running = to;
    if (to) tid = to->tid, threadIdx = to->idx;
#if EMU_TSAN
    // No synchronisation on a switch: only the barriers order the threads.
    __tsan_switch_to_fiber(to ? to->tsan : L.host_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(dying ? nullptr : &fake, to ? to->stack + GUARD_PAGE : L.host_stack,
                                   to ? STACK - GUARD_PAGE : L.host_stack_size);
#else
    (void)dying;
#endif
    swapcontext(from ? &from->ctx : &L.host, to ? &to->ctx : &L.host);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

EMU_SCHEDULER void make_ready(Fiber* f) {
    Launch& L = *current;
    L.ready[(L.ready_head + L.ready_count) % L.threads] = f;
    L.ready_count++;
}

EMU_SCHEDULER Fiber* next_ready() {
    Launch& L = *current;
    if (L.ready_count == 0) return nullptr;
    Fiber* f = L.ready[L.ready_head];
    L.ready_head = (L.ready_head + 1) % L.threads;
    L.ready_count--;
    return f;
}

EMU_SCHEDULER void Barrier::reset(int n) {
    expected = n;
    arrived = 0;
    first = last = nullptr;
}

EMU_SCHEDULER void Barrier::release_all() {
    arrived = 0;
    generation++;
    for (Fiber* f = first; f;) {
        Fiber* next = f->next;
        f->waits_at = nullptr;
        make_ready(f);
        f = next;
    }
    first = last = nullptr;
}

// Waits for the other participants; with a site, every thread of a generation must wait at
// the same one. The running fiber waits; the next ready one runs.
EMU_SCHEDULER void Barrier::arrive_and_wait(const char* what, const char* file, int line) {
    if (file) {
        if (arrived == 0) site_file = file, site_line = line;
        else if (line != site_line || std::strcmp(file, site_file) != 0) {
            std::ostringstream s;
            s << "divergent __syncthreads(): threads of one block wait at " << site_file << ":"
              << site_line << " and at " << file << ":" << line;
            throw KernelError(s.str());
        }
    }
    char* sync = &this->sync[generation & 1];
#if EMU_TSAN
    __tsan_release(sync);
#endif
    if (++arrived >= expected) {
        release_all();
    } else {
        Fiber* me = running;
        me->next = nullptr;
        me->waits_at = what;
        if (last) last->next = me;
        else first = me;
        last = me;
        switch_to(me, next_ready());
    }
#if EMU_TSAN
    __tsan_acquire(sync);
#else
    (void)sync;
#endif
}

// A thread that has returned no longer counts (as on the hardware).
EMU_SCHEDULER void Barrier::leave() {
    expected--;
    if (arrived > 0 && arrived >= expected) release_all();
}

// The end of a thread: it leaves its warp's and its block's barriers; the next ready one runs.
EMU_SCHEDULER void finish(Fiber* me) {
    Launch& L = *current;
    me->warp->alive[me->tid % 32] = false;
    me->warp->barrier.leave();
    L.block.leave();
    me->done = true;
    L.finished++;
#if EMU_TSAN
    __tsan_release(&L.done);
#endif
    switch_to(me, next_ready(), true);
}

void fiber_main() {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    Launch& L = *current;
    Fiber* me = running;
#if EMU_TSAN
    __tsan_acquire(&L.start);
#endif
    try {
        L.entry->call(L.args);
        if (!me->wg_uncommitted.empty() || !me->wg_groups.empty())
            emu::fail("a thread returned with wgmma.mma_async still in flight (no wgmma.wait_group 0)");
    } catch (const KernelError& err) {
#if EMU_TSAN
        __tsan_acquire(&L.error);
#endif
        if (L.error.empty()) L.error = err.what();
#if EMU_TSAN
        __tsan_release(&L.error);
#endif
    }
    finish(me);
}

float bf16_to_f32(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h) {
    _Float16 v;
    std::memcpy(&v, &h, 2);
    return (float)v;
}

uint16_t f32_to_f16(float f) {  // the compiler's conversion: round to nearest even
    _Float16 v = (_Float16)f;
    uint16_t h;
    std::memcpy(&h, &v, 2);
    return h;
}

}  // namespace

char emu_shared_anchor;

namespace emu {

void register_entries(const Entry* e, int count) {
    for (int i = 0; i < count; i++) entries().push_back(&e[i]);
}

void fail(const std::string& why) { throw KernelError(why); }

uint32_t shared_offset(const void* p) {
    const uint32_t a = (uint32_t)(int32_t)((const char*)p - &emu_shared_anchor);
    if (running) running->last_shared = a;
    return a;
}

unsigned char* shared_ptr(uint32_t addr, int align, const std::string& what) {
    unsigned char* p = (unsigned char*)&emu_shared_anchor + (int32_t)addr;
    if ((uintptr_t)p % align != 0)
        fail(what + ": shared address not " + std::to_string(align) + "-byte aligned");
    return p;
}

void syncthreads(const char* file, int line) {
    current->block.arrive_and_wait("__syncthreads()", file, line);
}

void warp_sync() { my_warp().barrier.arrive_and_wait("__syncwarp()"); }

uint32_t shuffle(uint32_t mask, uint32_t bits, int src) {
    if (mask != 0xffffffffu) fail("a shuffle with a mask other than all 32 lanes is not emulated");
    Warp& w = my_warp();
    const int lane = tid % 32;
    w.slots[lane] = bits;
    w.barrier.arrive_and_wait("a warp shuffle");
    if (src < 0 || src > 31 || !w.alive[src]) {
        std::ostringstream s;
        s << "lane " << lane << " of warp " << tid / 32 << " shuffles from lane " << src
          << ", which is not running (exited or beyond the block)";
        fail(s.str());
    }
    const uint32_t r = w.slots[src];
    w.barrier.arrive_and_wait("a warp shuffle");
    return r;
}

}  // namespace emu

namespace {

// "{%0, %1}" or "%3" → operand numbers.
std::vector<std::vector<int>> operands(const std::string& text, std::string& mnemonic) {
    std::string t;
    for (char c : text)
        if (!(c == ' ' && (!t.empty() && t.back() == ' '))) t += (c == '\t' || c == '\n') ? ' ' : c;
    while (!t.empty() && (t.back() == ' ' || t.back() == ';')) t.pop_back();
    const size_t sp = t.find(' ');
    mnemonic = t.substr(0, sp);
    std::vector<std::vector<int>> ops;
    std::vector<int> group;
    bool in_group = false;
    for (size_t i = sp == std::string::npos ? t.size() : sp; i < t.size(); i++) {
        const char c = t[i];
        if (c == '{') in_group = true, group.clear();
        else if (c == '}') in_group = false, ops.push_back(group);
        else if (c == '%') {
            int n = 0;
            while (i + 1 < t.size() && isdigit((unsigned char)t[i + 1])) n = n * 10 + (t[++i] - '0');
            if (in_group) group.push_back(n);
            else ops.push_back({n});
        } else if (c != ',' && c != ' ' && c != '[' && c != ']') {  // [%n]: an address operand
            emu::fail("PTX operand syntax not emulated: " + text);
        }
    }
    return ops;
}

struct Operands {
    void** outs;
    const int* out_sizes;
    int n_out;
    void** ins;
    const int* in_sizes;
    int n_in;

    void* ptr(int n, int size, const std::string& what) const {
        void* p;
        int s;
        if (n < n_out) p = outs[n], s = out_sizes[n];
        else if (n - n_out < n_in) p = ins[n - n_out], s = in_sizes[n - n_out];
        else emu::fail(what + ": operand %" + std::to_string(n) + " does not exist");
        if (s != size)
            emu::fail(what + ": operand %" + std::to_string(n) + " has " + std::to_string(s) +
                      " bytes, " + std::to_string(size) + " expected");
        return p;
    }
    template <typename T>
    T get(int n, const std::string& what) const {
        T v;
        std::memcpy(&v, ptr(n, sizeof(T), what), sizeof(T));
        return v;
    }
    template <typename T>
    void set(int n, T v, const std::string& what) const {
        if (n >= n_out) emu::fail(what + ": destination %" + std::to_string(n) + " is an input");
        std::memcpy(ptr(n, sizeof(T), what), &v, sizeof(T));
    }
};

// mma.sync.aligned.m16n8k16.row.col.f32.X.X.f32 D, A, B, C (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), g = lane / 4, t = lane % 4:
//   A: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B: b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C, D: c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1]
// The low 16 bits of a register hold the lower column (A) or row (B) index.
void mma(const Operands& o, const std::vector<std::vector<int>>& ops, bool bf16,
         const std::string& what) {
    if (ops.size() != 4 || ops[0].size() != 4 || ops[1].size() != 4 || ops[2].size() != 2 ||
        ops[3].size() != 4)
        emu::fail(what + ": expected {d0..d3}, {a0..a3}, {b0, b1}, {c0..c3}");
    Warp& w = my_warp();
    const int lane = tid % 32;
    uint32_t* mine = &w.mma[lane * 10];
    for (int i = 0; i < 4; i++) mine[i] = o.get<uint32_t>(ops[1][i], what);
    for (int i = 0; i < 2; i++) mine[4 + i] = o.get<uint32_t>(ops[2][i], what);
    for (int i = 0; i < 4; i++) {
        const float c = o.get<float>(ops[3][i], what);
        std::memcpy(&mine[6 + i], &c, 4);
    }
    w.barrier.arrive_and_wait("mma.sync");
    for (int l = 0; l < 32; l++)
        if (!w.alive[l]) emu::fail(what + ": a lane of the warp is not running (mma.sync needs all 32)");
    if (lane == 0) {  // the warp's product, once
        auto half = [&](uint32_t reg, int hi) {
            const uint16_t h = (uint16_t)(hi ? reg >> 16 : reg & 0xffff);
            return bf16 ? bf16_to_f32(h) : f16_to_f32(h);
        };
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; l++) {
            const uint32_t* r = &w.mma[l * 10];
            const int g = l / 4, t = l % 4;
            for (int e = 0; e < 2; e++) {
                A[g][2 * t + e] = half(r[0], e);
                A[g + 8][2 * t + e] = half(r[1], e);
                A[g][2 * t + 8 + e] = half(r[2], e);
                A[g + 8][2 * t + 8 + e] = half(r[3], e);
                B[2 * t + e][g] = half(r[4], e);
                B[2 * t + 8 + e][g] = half(r[5], e);
            }
            float c[4];
            std::memcpy(c, &r[6], 16);
            C[g][2 * t] = c[0];
            C[g][2 * t + 1] = c[1];
            C[g + 8][2 * t] = c[2];
            C[g + 8][2 * t + 1] = c[3];
        }
        for (int l = 0; l < 32; l++) {
            const int g = l / 4, t = l % 4;
            const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
            for (int e = 0; e < 4; e++) {
                float acc = 0.0f;
                for (int k = 0; k < 16; k++) acc += A[rows[e]][k] * B[k][cols[e]];  // products exact in f32
                w.d[l * 4 + e] = C[rows[e]][cols[e]] + acc;
            }
        }
    }
    w.barrier.arrive_and_wait("mma.sync");  // lane 0 has computed the warp's D
    for (int e = 0; e < 4; e++) o.set<float>(ops[0][e], w.d[lane * 4 + e], what);
}

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}.shared.b16 {r..}, [addr] (PTX ISA, "Warp-level matrix
// load instruction: ldmatrix"): each of the x matrices is 8 rows of 8 16-bit elements; threads
// 8i..8i+7 give the 16-byte aligned addresses of the rows of matrix i (for .x1 and .x2 only
// threads 0-7 and 0-15 count); register i of lane l receives row l / 4, elements
// 2 (l % 4) and 2 (l % 4) + 1 of matrix i, the lower-indexed element in the low 16 bits.
// With .trans each matrix is delivered transposed: register i of lane l receives elements
// (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4) of matrix i (row, column), the first in the
// low 16 bits.
void ldmatrix(const Operands& o, const std::vector<std::vector<int>>& ops, int count, bool trans,
              const std::string& what) {
    if (ops.size() != 2 || (int)ops[0].size() != count || ops[1].size() != 1)
        emu::fail(what + ": expected {" + std::to_string(count) + " registers}, [address]");
    Warp& w = my_warp();
    const int lane = tid % 32;
    w.rows[lane] = o.get<uint32_t>(ops[1][0], what);
    w.barrier.arrive_and_wait("ldmatrix");
    for (int l = 0; l < 8 * count; l++)
        if (!w.alive[l]) emu::fail(what + ": a lane of the warp is not running (ldmatrix needs all 32)");
    uint32_t regs[4];
    for (int i = 0; i < count; i++) {
        if (!trans) {
            const unsigned char* row = emu::shared_ptr(w.rows[8 * i + lane / 4], 16, what);
            std::memcpy(&regs[i], row + 4 * (lane % 4), 4);
        } else {
            uint16_t e[2];
            for (int k = 0; k < 2; k++) {
                const unsigned char* row = emu::shared_ptr(w.rows[8 * i + 2 * (lane % 4) + k], 16, what);
                std::memcpy(&e[k], row + 2 * (lane / 4), 2);
            }
            regs[i] = (uint32_t)e[0] | (uint32_t)e[1] << 16;
        }
    }
    w.barrier.arrive_and_wait("ldmatrix");  // every lane has read the warp's addresses
    for (int i = 0; i < count; i++) o.set<uint32_t>(ops[0][i], regs[i], what);
}

// A shared-memory address from the 14 bits (address >> 4) a matrix descriptor keeps. On the
// device they are the whole address (shared memory is under 256 KiB); here shared variables
// are static and their offsets from the anchor wider, so the address is the one with these
// low 18 bits nearest to `near`, the thread's last converted shared address (a kernel builds
// its descriptors from addresses it has just converted, of one shared object).
uint32_t descriptor_address(uint64_t desc, uint32_t near) {
    const int64_t low = (int64_t)((desc & 0x3fff) << 4), span = 1 << 18;
    const int64_t c = (int64_t)(int32_t)near;
    int64_t best = (c & ~(span - 1)) + low;
    for (const int64_t d : {-span, span})
        if (std::llabs(best + d - c) < std::llabs(best - c)) best += d;
    return (uint32_t)(int32_t)best;
}

// Row `row` of a K-major operand described by `desc` (PTX ISA, "Matrix Descriptor Format" and
// "Shared Memory Matrix Layout", no swizzle), its 16 values of k: 8 × 8 core matrices of
// 16-byte rows, the one holding (row, col) starting (row / 8) · SBO + (col / 8) · LBO bytes
// after the start address, so the row is two 16-byte pieces LBO apart.
void descriptor_row(uint64_t desc, uint32_t near, int row, uint16_t out[16], const std::string& what) {
    const uint64_t lbo = ((desc >> 16) & 0x3fff) << 4, sbo = ((desc >> 32) & 0x3fff) << 4;
    const uint32_t at = descriptor_address(desc, near) + (uint32_t)((row / 8) * sbo + (row % 8) * 16);
    for (int half = 0; half < 2; half++)
        std::memcpy(out + 8 * half, emu::shared_ptr(at + (uint32_t)(half * lbo), 16, what), 16);
}

// Checks a matrix descriptor's fields: the ones emulated (no swizzle, base offset 0) and the
// reserved bits zero.
void check_descriptor(uint64_t desc, const std::string& what) {
    const uint64_t reserved = 0x3ull << 14 | 0x3ull << 30 | 0x7ull << 46 | 0x3ffull << 52;
    if (desc & reserved) emu::fail(what + ": a matrix descriptor with reserved bits set");
    if (desc >> 62) emu::fail(what + ": swizzled shared-memory layouts are not emulated");
    if ((desc >> 49) & 7) emu::fail(what + ": a matrix base offset is not emulated");
}

// The operands this thread's part of D reads (see `complete_wgmma`): its two rows of A (rows
// 16 w + l / 4 and 8 more), then its n / 4 columns of B (column q is 8 (q / 2) + 2 (l % 4) +
// q % 2), 16 values each, through the descriptors.
std::vector<uint16_t> wgmma_operands(const WgmmaOp& op, const std::string& what) {
    const int lane = tid % 32, w = (tid / 32) % 4;
    std::vector<uint16_t> v(16 * (2 + op.n / 4));
    for (int h = 0; h < 2; h++) descriptor_row(op.a, op.near, 16 * w + lane / 4 + 8 * h, &v[16 * h], what);
    for (int q = 0; q < op.n / 4; q++)
        descriptor_row(op.b, op.near, 8 * (q / 2) + 2 * (lane % 4) + q % 2, &v[16 * (2 + q)], what);
    return v;
}

// D (64 × n, the warpgroup's) = A (64 × 16) · B (16 × n) + D, for this thread's part of D:
// register i of lane l of warp w of the warpgroup is D[16 w + l / 4 + 8 ((i / 2) % 2)]
// [8 (i / 4) + 2 (l % 4) + i % 2] (PTX ISA, "Matrix Fragments for wgmma.mma_async.m64nNk16").
// A[r][c] and B[c][j] (B K-major: as n rows of 16) come through the descriptors, and must be
// what they were at the issue. The 16 products are summed in f32 in order, then added to D, as
// the mma.sync emulation does.
void complete_wgmma(const WgmmaOp& op, const std::string& what) {
    const std::vector<uint16_t> v = wgmma_operands(op, what);
    if (v != op.issued)
        emu::fail(what + ": shared memory read by a wgmma.mma_async in flight changed before its wgmma.wait_group");
    auto value = [&](size_t at) { return op.bf16 ? bf16_to_f32(v[at]) : f16_to_f32(v[at]); };
    for (int i = 0; i < op.n / 2; i++) {
        const size_t a = 16 * ((i / 2) % 2);                 // row 16 w + l / 4 + 8 ((i / 2) % 2)
        const size_t b = 16 * (2 + 2 * (i / 4) + i % 2);     // column 8 (i / 4) + 2 (l % 4) + i % 2
        float acc = 0.0f;
        for (size_t c = 0; c < 16; c++) acc += value(a + c) * value(b + c);
        *op.d[i] = (op.accumulate ? *op.d[i] : 0.0f) + acc;
    }
}

void complete_wgmma_groups(size_t keep, const std::string& what) {
    auto& groups = running->wg_groups;
    while (groups.size() > keep) {
        for (const WgmmaOp& op : groups.front()) complete_wgmma(op, what);
        groups.erase(groups.begin());
    }
}

// The number of `%n` (digits by hand: std::stoi touches errno, which every fiber shares on
// the one host thread, a race to ThreadSanitizer).
int operand_number(const std::string& t, const std::string& what) {
    if (t.size() < 2 || t.size() > 6 || t[0] != '%') emu::fail(what + ": `" + t + "` is not an operand");
    int n = 0;
    for (size_t i = 1; i < t.size(); i++) {
        if (!isdigit((unsigned char)t[i])) emu::fail(what + ": `" + t + "` is not an operand");
        n = n * 10 + (t[i] - '0');
    }
    return n;
}

std::string trim(const std::string& s) {
    const size_t b = s.find_first_not_of(" \t\n"), e = s.find_last_not_of(" \t\n");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16}.{bf16,f16} {d..}, a-desc, b-desc,
// scale-d, 1, 1, 0, 0 (both operands from shared memory, K-major, not negated): issued now,
// computed when its group is waited for (`WgmmaOp`).
void wgmma(const std::string& stmt, const std::map<std::string, bool>& preds, const Operands& o,
           const std::string& what) {
    const size_t sp = stmt.find(' ');
    if (sp == std::string::npos) emu::fail(what + ": an instruction without operands");
    const std::string mnemonic = stmt.substr(0, sp);
    const std::string head = "wgmma.mma_async.sync.aligned.m64n";
    int n = 0;
    size_t at = head.size();
    while (mnemonic.rfind(head, 0) == 0 && at < mnemonic.size() && isdigit((unsigned char)mnemonic[at]))
        n = n * 10 + (mnemonic[at++] - '0');
    const std::string types = mnemonic.substr(std::min(at, mnemonic.size()));
    const bool bf16 = types == "k16.f32.bf16.bf16";
    if (mnemonic.rfind(head, 0) != 0 || n < 8 || n > 256 || n % 8 != 0 || (!bf16 && types != "k16.f32.f16.f16"))
        emu::fail("PTX instruction not emulated: " + mnemonic);
    // The operands: {d..}, then seven more.
    std::vector<std::string> parts;
    std::string cur;
    int depth = 0;
    for (char ch : stmt.substr(sp)) {
        if (ch == '{') depth++;
        if (ch == '}') depth--;
        if (ch == ',' && depth == 0) parts.push_back(trim(cur)), cur.clear();
        else cur += ch;
    }
    parts.push_back(trim(cur));
    if (parts.size() != 8 || parts[0].empty() || parts[0].front() != '{' || parts[0].back() != '}')
        emu::fail(what + ": expected {d..}, a-desc, b-desc, scale-d, imm-scale-a, imm-scale-b, imm-trans-a, imm-trans-b");
    auto operand = [&](const std::string& t) { return operand_number(t, what); };
    WgmmaOp op{};
    std::string list = parts[0].substr(1, parts[0].size() - 2);
    for (size_t from = 0; from <= list.size();) {
        const size_t comma = std::min(list.find(',', from), list.size());
        op.d.push_back((float*)o.ptr(operand(trim(list.substr(from, comma - from))), 4, what));
        from = comma + 1;
    }
    if ((int)op.d.size() != n / 2)
        emu::fail(what + ": " + std::to_string(n / 2) + " accumulator registers expected");
    op.a = o.get<uint64_t>(operand(parts[1]), what);
    op.b = o.get<uint64_t>(operand(parts[2]), what);
    const auto pred = preds.find(parts[3]);
    if (pred == preds.end()) emu::fail(what + ": scale-d `" + parts[3] + "` is not a predicate set in the block");
    op.accumulate = pred->second;
    if (parts[4] != "1" || parts[5] != "1" || parts[6] != "0" || parts[7] != "0")
        emu::fail(what + ": negated or transposed operands are not emulated");
    check_descriptor(op.a, what);
    check_descriptor(op.b, what);
    op.bf16 = bf16;
    op.n = n;
    op.near = running->last_shared;
    op.issued = wgmma_operands(op, what);
    if ((blockDim.x * blockDim.y * blockDim.z) % 128 != 0)
        emu::fail(what + ": the block is not made of whole warpgroups (128 threads)");
    if (!running->wg_fenced) emu::fail(what + ": no wgmma.fence before it since the last wgmma.wait_group");
    // Copies that landed are generic-proxy writes: the wgmma (async proxy) may not see them
    // without this thread's fence.proxy.async. (Plain stores to shared memory are not tracked.)
    if (running->copies_unfenced)
        emu::fail(what + ": cp.async copies landed since this thread's last fence.proxy.async.shared::cta");
    // .sync.aligned: the warp's 32 lanes issue it together, with the same descriptors (compared
    // through one exchange of a mix of their bits; every lane checks against lane 0's).
    uint64_t mix = op.a * 0x9e3779b97f4a7c15ull ^ op.b;
    mix ^= mix >> 29;
    const uint32_t mine = (uint32_t)mix ^ (uint32_t)(mix >> 32);
    if (emu::shuffle(0xffffffffu, mine, 0) != mine)
        emu::fail(what + ": the lanes of a warp give different matrix descriptors");
    running->wg_uncommitted.push_back(std::move(op));
}

// An asm block `{ .reg .pred p; setp.ne.b32 p, %n, 0; <instruction>; }`: the predicates it
// declares and sets, then the instruction (wgmma.mma_async only).
void ptx_block(const std::string& text, const Operands& o, const std::string& what) {
    std::string body = trim(text);
    if (body.size() < 2 || body.back() != '}') emu::fail(what + ": unterminated { } block");
    body = body.substr(1, body.size() - 2);
    std::map<std::string, bool> preds;
    for (size_t from = 0; from < body.size();) {
        const size_t semi = std::min(body.find(';', from), body.size());
        const std::string stmt = trim(body.substr(from, semi - from));
        from = semi + 1;
        if (stmt.empty()) continue;
        if (stmt.rfind(".reg .pred ", 0) == 0) {
            preds[trim(stmt.substr(std::strlen(".reg .pred ")))] = false;
        } else if (stmt.rfind("setp.ne.b32 ", 0) == 0) {
            const std::string args = stmt.substr(std::strlen("setp.ne.b32 "));
            const size_t c1 = args.find(','), c2 = args.find(',', c1 + 1);
            const std::string name = trim(args.substr(0, c1));
            const std::string src = trim(args.substr(c1 + 1, c2 - c1 - 1));
            if (c1 == std::string::npos || c2 == std::string::npos || trim(args.substr(c2 + 1)) != "0" ||
                !preds.count(name))
                emu::fail(what + ": `" + stmt + "` not emulated (setp.ne.b32 pred, %n, 0)");
            preds[name] = o.get<int>(operand_number(src, what), what) != 0;
        } else if (stmt.rfind("wgmma.mma_async.", 0) == 0) {
            wgmma(stmt, preds, o, what);
        } else {
            emu::fail(what + ": `" + stmt + "` not emulated in a { } block");
        }
    }
}

void complete_groups(size_t keep) {
    auto& groups = running->groups;
    while (groups.size() > keep) {
        for (const AsyncCopy& c : groups.front()) std::memcpy(c.dst, c.bytes, c.size);
        running->copies_unfenced |= !groups.front().empty();
        groups.erase(groups.begin());
    }
}

}  // namespace

namespace emu {

void ptx(const char* text, void** outs, const int* out_sizes, int n_out, void** ins,
         const int* in_sizes, int n_in) {
    const std::string what = "PTX `" + std::string(text) + "`";
    const char* first = text + std::strspn(text, " \t\n");  // no copy: every instruction passes here
    if (*first == '\0') return;  // asm volatile("" : "+f"(v)): a compiler barrier only
    if (*first == '{') {
        const Operands o{outs, out_sizes, n_out, ins, in_sizes, n_in};
        return ptx_block(trim(text), o, what);
    }
    std::string mnemonic;
    const auto ops = operands(text, mnemonic);
    auto& uncommitted = running->uncommitted;
    auto& groups = running->groups;
    const Operands o{outs, out_sizes, n_out, ins, in_sizes, n_in};
    auto scalar = [&](size_t n) {
        if (ops.size() != n) fail(what + ": " + std::to_string(n) + " operands expected");
        for (const auto& g : ops)
            if (g.size() != 1) fail(what + ": a vector operand where a register is expected");
    };
    if (mnemonic == "cvt.f32.f16") {
        scalar(2);
        o.set<float>(ops[0][0], f16_to_f32(o.get<uint16_t>(ops[1][0], what)), what);
    } else if (mnemonic == "cvt.f32.bf16") {
        scalar(2);
        o.set<float>(ops[0][0], bf16_to_f32(o.get<uint16_t>(ops[1][0], what)), what);
    } else if (mnemonic == "cvt.rn.bf16x2.f32" || mnemonic == "cvt.rn.f16x2.f32") {
        // d = {cvt(a) in the upper half, cvt(b) in the lower half}
        scalar(3);
        const bool bf = mnemonic == "cvt.rn.bf16x2.f32";
        const float a = o.get<float>(ops[1][0], what), b = o.get<float>(ops[2][0], what);
        const uint32_t hi = bf ? f32_to_bf16(a) : f32_to_f16(a);
        const uint32_t lo = bf ? f32_to_bf16(b) : f32_to_f16(b);
        o.set<uint32_t>(ops[0][0], hi << 16 | lo, what);
    } else if (mnemonic == "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") {
        mma(o, ops, true, what);
    } else if (mnemonic == "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") {
        mma(o, ops, false, what);
    } else if (mnemonic.rfind("ldmatrix.sync.aligned.m8n8.", 0) == 0) {
        // ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16
        const std::string shape = mnemonic.substr(std::strlen("ldmatrix.sync.aligned.m8n8."));
        const int count = shape.rfind("x1.", 0) == 0 ? 1 : shape.rfind("x2.", 0) == 0 ? 2
                        : shape.rfind("x4.", 0) == 0 ? 4 : 0;
        const std::string rest = count ? shape.substr(3) : "";
        if (count == 0 || (rest != "shared.b16" && rest != "trans.shared.b16"))
            fail("PTX instruction not emulated: " + mnemonic);
        ldmatrix(o, ops, count, rest == "trans.shared.b16", what);
    } else if (mnemonic == "cp.async.cg.shared.global" || mnemonic == "cp.async.ca.shared.global") {
        // cp.async.{ca,cg}.shared.global [dst], [src], cp-size, src-size: src-size bytes from
        // global memory, the rest of the cp-size bytes zero (PTX ISA, "cp.async"); .cg takes 16
        // bytes only, .ca 4, 8 or 16; both addresses aligned to cp-size.
        scalar(4);
        const int size = o.get<int>(ops[2][0], what);
        const int src_size = o.get<int>(ops[3][0], what);
        if (size != 16 && (mnemonic == "cp.async.cg.shared.global" || (size != 4 && size != 8)))
            fail(what + ": cp-size " + std::to_string(size) + " not allowed");
        if (src_size < 0 || src_size > size)
            fail(what + ": src-size " + std::to_string(src_size) + " outside 0.." + std::to_string(size));
        AsyncCopy c{shared_ptr(o.get<uint32_t>(ops[0][0], what), size, what), {}, size};
        const unsigned char* src = o.get<const unsigned char*>(ops[1][0], what);
        if ((uintptr_t)src % size != 0) fail(what + ": global address not aligned to cp-size");
        if (src_size > 0) std::memcpy(c.bytes, src, src_size);
        uncommitted.push_back(c);
    } else if (mnemonic == "prefetch.global.L2") {
        // prefetch.global.L2 [a]: a hint that changes no value; the line must be one a kernel
        // could read, inside a buffer of the launch.
        scalar(1);
        const unsigned char* a = o.get<const unsigned char*>(ops[0][0], what);
        bool inside = false;
        for (const auto& [p, len] : launch_buffers) inside = inside || (a >= p && a < p + len);
        if (!inside) fail(what + ": address outside every buffer of the launch");
    } else if (mnemonic == "wgmma.fence.sync.aligned") {
        // Orders the thread's register accesses before the wgmma.mma_async that follow.
        scalar(0);
        running->wg_fenced = true;
    } else if (mnemonic == "wgmma.commit_group.sync.aligned") {
        scalar(0);
        running->wg_groups.push_back(std::move(running->wg_uncommitted));
        running->wg_uncommitted.clear();
    } else if (mnemonic == "wgmma.wait_group.sync.aligned") {
        // Completes all but the newest N committed groups (their operands read now).
        scalar(1);
        const int n = o.get<int>(ops[0][0], what);
        if (n < 0) fail(what + ": negative group count");
        complete_wgmma_groups((size_t)n, what);
        running->wg_fenced = false;
    } else if (mnemonic == "fence.proxy.async.shared::cta") {
        // Orders generic-proxy writes to shared memory before async-proxy reads (wgmma); the
        // emulator has one proxy, whose writes are visible at once; it checks that copies
        // landed since a thread's last fence are not followed by its wgmma.
        scalar(0);
        running->copies_unfenced = false;
    } else if (mnemonic == "cp.async.commit_group") {
        scalar(0);
        groups.push_back(std::move(uncommitted));
        uncommitted.clear();
    } else if (mnemonic == "cp.async.wait_group") {
        scalar(1);
        const int n = o.get<int>(ops[0][0], what);
        if (n < 0) fail(what + ": negative group count");
        complete_groups((size_t)n);
    } else if (mnemonic == "cp.async.wait_all") {
        scalar(0);
        groups.push_back(std::move(uncommitted));
        uncommitted.clear();
        complete_groups(0);
    } else {
        fail("PTX instruction not emulated: " + mnemonic);
    }
}

}  // namespace emu

namespace {

constexpr unsigned char GUARD = 0xA5;

bool read_exact(void* p, size_t n) { return std::fread(p, 1, n, stdin) == n; }
void write_all(const void* p, size_t n) { std::fwrite(p, 1, n, stdout); }

// Runs one launch: the blocks one after another, the threads of a block as fibers on this
// host thread, each until it waits or returns; a block whose threads all wait is a deadlock.
std::string run(const emu::Entry& e, dim3 grid, dim3 block, void** args) {
    // The limits a CUDA launch enforces (CUDA_ERROR_INVALID_VALUE on a GPU): refused with the
    // shape named, before any fiber or stack is made for it.
    const unsigned long long block_threads = (unsigned long long)block.x * block.y * block.z;
    if (block_threads == 0 || block_threads > 1024 || block.z > 64 || grid.x == 0 ||
        grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        std::ostringstream s;
        s << "invalid launch shape: grid (" << grid.x << ", " << grid.y << ", " << grid.z
          << "), block (" << block.x << ", " << block.y << ", " << block.z
          << "): a block needs 1 to 1024 threads (z at most 64), a grid 1 to 2^31-1 blocks in "
             "x and 1 to 65535 in y and z";
        return s.str();
    }
    Launch L;
    current = &L;
    L.entry = &e;
    L.args = args;
    L.threads = (int)(block.x * block.y * block.z);
    const int nwarps = (L.threads + 31) / 32;
    for (int i = 0; i < nwarps; i++) L.warps.push_back(std::make_unique<Warp>());
    L.fibers.reset(new Fiber[L.threads]);
    L.ready_slots.assign(L.threads, nullptr);
    L.ready = L.ready_slots.data();
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &L.host_stack, &L.host_stack_size);
        pthread_attr_destroy(&attr);
    }
#if EMU_TSAN
    L.host_tsan = __tsan_get_current_fiber();
#endif
    gridDim = grid;
    blockDim = block;
    try {
        for (int t = 0; t < L.threads; t++) {
            Fiber& f = L.fibers[t];
            f.tid = t;
            f.warp = L.warps[t / 32].get();
            f.idx = {(unsigned)t % block.x, ((unsigned)t / block.x) % block.y, (unsigned)t / (block.x * block.y)};
            f.stack = stack_for(t);
#if EMU_TSAN
            f.tsan = __tsan_create_fiber(0);
#endif
        }
    } catch (const KernelError& err) {
        current = nullptr;
        return err.what();
    }
    const long blocks = (long)grid.x * grid.y * grid.z;
    for (long b = 0; b < blocks && L.error.empty(); b++) {
        blockIdx = {(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y),
                    (unsigned)(b / ((long)grid.x * grid.y))};
        L.block.reset(L.threads);
        for (int i = 0; i < nwarps; i++) {
            const int n = std::min(32, L.threads - 32 * i);
            L.warps[i]->barrier.reset(n);
            for (int l = 0; l < 32; l++) L.warps[i]->alive[l] = l < n;
        }
        L.ready_head = L.ready_count = 0;
        L.finished = 0;
        for (int t = 0; t < L.threads; t++) {
            Fiber& f = L.fibers[t];
            f.done = false;
            f.waits_at = nullptr;
            f.uncommitted.clear();
            f.groups.clear();
            f.wg_uncommitted.clear();
            f.wg_groups.clear();
            f.wg_fenced = false;
            f.copies_unfenced = false;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack + GUARD_PAGE;
            f.ctx.uc_stack.ss_size = STACK - GUARD_PAGE;
            f.ctx.uc_link = nullptr;
            makecontext(&f.ctx, fiber_main, 0);
            make_ready(&f);
        }
#if EMU_TSAN
        __tsan_release(&L.start);
#endif
        switch_to(nullptr, next_ready());
#if EMU_TSAN
        __tsan_acquire(&L.done);
#endif
        if (L.finished < L.threads && L.error.empty()) {
            std::ostringstream s;
            s << "deadlock: " << L.threads - L.finished << " of the " << L.threads
              << " threads of block " << b << " wait forever";
            for (int t = 0; t < L.threads; t++)
                if (!L.fibers[t].done && L.fibers[t].waits_at) {
                    s << " (thread " << t << " at " << L.fibers[t].waits_at;
                    if (L.fibers[t].waits_at == std::string("__syncthreads()"))
                        s << ", " << L.block.site_file << ":" << L.block.site_line;
                    s << ")";
                    break;
                }
            L.error = s.str();
        }
    }
#if EMU_TSAN
    for (int t = 0; t < L.threads; t++) __tsan_destroy_fiber(L.fibers[t].tsan);
#endif
    current = nullptr;
    running = nullptr;
    return L.error;
}

}  // namespace

int main() {
    std::setvbuf(stdout, nullptr, _IOFBF, 1 << 20);
    for (;;) {
        uint32_t name_len;
        if (!read_exact(&name_len, 4)) return 0;
        std::string name(name_len, '\0');
        uint32_t dims[6], nargs;
        if (!read_exact(name.data(), name_len) || !read_exact(dims, 24) || !read_exact(&nargs, 4))
            return 2;
        // EMU_EXACT_BUFFERS (the AddressSanitizer build): each buffer its own allocation of
        // exactly its length, so that any access past it is a report; otherwise guards.
        static const bool exact = std::getenv("EMU_EXACT_BUFFERS") != nullptr &&
                                  std::getenv("EMU_EXACT_BUFFERS")[0] == '1';
        std::vector<std::unique_ptr<unsigned char, decltype(&std::free)>> owned;
        std::vector<std::vector<unsigned char>> storage(nargs);
        std::vector<unsigned char> kinds(nargs);
        std::vector<void*> pointers(nargs);  // buffer arguments: the buffer's address
        std::vector<void*> args(nargs);
        std::vector<uint64_t> lens;
        for (uint32_t i = 0; i < nargs; i++) {
            uint64_t len;
            if (!read_exact(&kinds[i], 1) || !read_exact(&len, 8)) return 2;
            // Buffers start 256-byte aligned, as cudaMalloc's do, between two 256-byte guards
            // whose pattern is checked after the launch: a write outside is an error.
            unsigned char* p;
            if (exact) {
                owned.emplace_back((unsigned char*)std::malloc(len ? len : 1), &std::free);
                p = owned.back().get();
            } else {
                storage[i].assign(len + 768, GUARD);
                p = storage[i].data() + 256;
                p += (256 - ((uintptr_t)p % 256)) % 256;
            }
            if (!read_exact(p, len)) return 2;
            lens.push_back(len);
            pointers[i] = p;
            args[i] = kinds[i] == 0 ? (void*)&pointers[i] : (void*)p;
        }
        launch_buffers.clear();
        for (uint32_t i = 0; i < nargs; i++)
            if (kinds[i] == 0) launch_buffers.emplace_back((const unsigned char*)pointers[i], lens[i]);
        std::string error;
        const emu::Entry* entry = nullptr;
        for (const emu::Entry* e : entries())
            if (name == e->name) entry = e;
        if (!entry) error = "no kernel named " + name;
        else if ((uint32_t)entry->nargs != nargs)
            error = name + " takes " + std::to_string(entry->nargs) + " arguments, " +
                    std::to_string(nargs) + " given";
        for (uint32_t i = 0; entry && error.empty() && i < nargs; i++) {
            const size_t want = (size_t)entry->sizes[i];
            const size_t have = kinds[i] == 0 ? sizeof(void*) : lens[i];
            if (want != have)
                error = name + ": argument " + std::to_string(i) + " has " + std::to_string(have) +
                        " bytes, the kernel's parameter " + std::to_string(want);
        }
        if (error.empty())
            error = run(*entry, dim3{dims[0], dims[1], dims[2]}, dim3{dims[3], dims[4], dims[5]},
                        args.data());
        for (uint32_t i = 0; !exact && error.empty() && i < nargs; i++) {
            const unsigned char* p = (const unsigned char*)pointers[i];
            for (int g = 1; g <= 256 && error.empty(); g++)
                if (p[-g] != GUARD || p[lens[i] + g - 1] != GUARD)
                    error = name + " wrote outside its argument " + std::to_string(i) + " (" +
                            std::to_string(lens[i]) + " bytes)";
        }
        const unsigned char status = error.empty() ? 0 : 1;
        write_all(&status, 1);
        if (status) {
            const uint64_t len = error.size();
            write_all(&len, 8);
            write_all(error.data(), len);
        } else {
            for (uint32_t i = 0; i < nargs; i++) {
                if (kinds[i] != 0) continue;
                const uint64_t len = lens[i];
                write_all(&len, 8);
                write_all(pointers[i], len);
            }
        }
        std::fflush(stdout);
    }
}
