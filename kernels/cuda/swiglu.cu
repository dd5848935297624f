// swiglu.cu — the gated activation of the MLP, in place.
//
//   gate[i] = silu(gate[i]) · up[i],   silu(g) = g / (1 + e^(−g))
//
// Threads: a grid-stride loop, one element per thread per step; expf (not __expf) keeps the
// result within a few ulp of the CPU backend.

extern "C" __global__ void swiglu(float* gate, const float* up, long long len) {
    stream_order();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
