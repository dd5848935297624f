// residual.cu — the residual add (where it is not fused into norm.cu's add_rms_norm).
//
//   x[i] += y[i]
//
// Threads: a grid-stride loop, one element per thread per step.

extern "C" __global__ void add(float* x, const float* y, long long len) {
    stream_order();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x)
        x[i] += y[i];
}
