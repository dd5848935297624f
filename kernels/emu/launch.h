// launch.h — the kernel table of the emulator: for each `extern "C"` kernel, its name, the
// size of each parameter (checked against what the driver sends: a wrong argument list is an
// error, not a misread) and a function that calls it with arguments copied from raw bytes.
#pragma once

#include <cstddef>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace emu {

struct Entry {
    const char* name;
    int nargs;
    const int* sizes;
    void (*call)(void** args);
};

template <typename... A, std::size_t... I>
void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    std::tuple<std::decay_t<A>...> values;
    ((std::memcpy(&std::get<I>(values), args[I], sizeof(std::decay_t<A>))), ...);
    f(std::get<I>(values)...);
}

template <auto F>
struct Wrap;

template <typename... A, void (*F)(A...)>
struct Wrap<F> {
    static constexpr int n = sizeof...(A);
    static constexpr int sizes[sizeof...(A) + 1] = {(int)sizeof(std::decay_t<A>)..., 0};
    static void call(void** args) { call_with(F, args, std::index_sequence_for<A...>{}); }
};

// Adds a translation unit's kernels to the runtime's table (one object per .cu file, each
// with a static `Registration` of its kernels).
void register_entries(const Entry* entries, int count);
struct Registration {
    Registration(const Entry* entries, int count) { register_entries(entries, count); }
};

}  // namespace emu

#define EMU_ENTRY(name) \
    emu::Entry { #name, emu::Wrap<&name>::n, emu::Wrap<&name>::sizes, &emu::Wrap<&name>::call }
