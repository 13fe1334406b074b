// Multiresolution hash encoding, forward and table backward, with exactly the conventions of the
// torch path in sds3d/scene/hashgrid.py (read its module docstring first).
//
// Plain CUDA on purpose: the CPU build of torch ships no CUDA headers, so this file sees only raw
// pointers and the stream as an integer, and CI can compile it with nvcc on a machine without a GPU.
// hashgrid_binding.cpp is the torch-facing side.
//
// Launch: level-major, a grid of (ceil(N / 256), L) blocks with the level on blockIdx.y, so the
// blocks running at one time read one level's rows and that level stays resident in L2.
// One thread handles one (point, level) pair and its 8 corners.

#include <cstdint>
#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256;

struct Level {
    float scale;
    int64_t resolution, size, offset;
    bool dense;
};

__device__ Level load_level(const float* scales, const int64_t* resolutions, const int64_t* sizes,
                            const int64_t* offsets, const uint8_t* dense, int l) {
    return {scales[l], resolutions[l], sizes[l], offsets[l], dense[l] != 0};
}

// The mathematical modulo of the torch path (torch.remainder), cheap in the common cases.
__device__ int64_t wrap(int64_t v, int64_t size) {
    if (v >= 0 && v < size) return v;
    if ((size & (size - 1)) == 0) return v & (size - 1);  // two's complement makes this the modulo
    int64_t r = v % size;
    return r < 0 ? r + size : r;
}

// pos = x * scale + 0.5 rounded twice, as torch's separate mul and add do: an FMA would round
// once and move points that sit on a cell face into the neighbouring cell.
__device__ void cell(const float* x, float scale, int64_t corner[3], float frac[3]) {
    for (int a = 0; a < 3; ++a) {
        float pos = __fadd_rn(__fmul_rn(x[a], scale), 0.5f);
        float fl = floorf(pos);
        corner[a] = static_cast<int64_t>(fl);
        frac[a] = __fsub_rn(pos, fl);
    }
}

// Corner c in 0..7 is (dx, dy, dz) = (c >> 2, c >> 1, c) & 1, the order of the torch path.
__device__ int64_t corner_row(const Level& lv, const int64_t corner[3], int c) {
    int64_t ix = corner[0] + ((c >> 2) & 1), iy = corner[1] + ((c >> 1) & 1), iz = corner[2] + (c & 1);
    int64_t v;
    if (lv.dense) {
        v = ix + iy * lv.resolution + iz * lv.resolution * lv.resolution;
    } else {
        v = static_cast<int64_t>(static_cast<uint64_t>(ix) ^ (static_cast<uint64_t>(iy) * 2654435761ull) ^
                                 (static_cast<uint64_t>(iz) * 805459861ull));
    }
    return lv.offset + wrap(v, lv.size);
}

__device__ float corner_weight(const float frac[3], int c) {
    float wx = (c >> 2) & 1 ? frac[0] : __fsub_rn(1.0f, frac[0]);
    float wy = (c >> 1) & 1 ? frac[1] : __fsub_rn(1.0f, frac[1]);
    float wz = c & 1 ? frac[2] : __fsub_rn(1.0f, frac[2]);
    return __fmul_rn(__fmul_rn(wx, wy), wz);
}

template <int F>
__global__ void forward_kernel(const float* __restrict__ x, const float* __restrict__ table,
                               const float* scales, const int64_t* resolutions, const int64_t* sizes,
                               const int64_t* offsets, const uint8_t* dense, int64_t n_points,
                               int n_levels, int active_levels, float* __restrict__ out) {
    const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    const int l = blockIdx.y;
    if (n >= n_points) return;
    float* o = out + (n * n_levels + l) * F;
    float acc[F] = {};
    if (l < active_levels) {
        const Level lv = load_level(scales, resolutions, sizes, offsets, dense, l);
        int64_t corner[3];
        float frac[3];
        cell(x + n * 3, lv.scale, corner, frac);
        for (int c = 0; c < 8; ++c) {
            const float* row = table + corner_row(lv, corner, c) * F;
            const float w = corner_weight(frac, c);
            for (int f = 0; f < F; ++f) acc[f] = __fadd_rn(acc[f], __fmul_rn(w, row[f]));
        }
    }
    for (int f = 0; f < F; ++f) o[f] = acc[f];
}

template <int F>
__global__ void backward_kernel(const float* __restrict__ x, const float* __restrict__ grad_out,
                                const float* scales, const int64_t* resolutions, const int64_t* sizes,
                                const int64_t* offsets, const uint8_t* dense, int64_t n_points,
                                int n_levels, int active_levels, float* __restrict__ grad_table) {
    const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    const int l = blockIdx.y;
    if (n >= n_points || l >= active_levels) return;
    const Level lv = load_level(scales, resolutions, sizes, offsets, dense, l);
    const float* g = grad_out + (n * n_levels + l) * F;
    float gf[F];
    for (int f = 0; f < F; ++f) gf[f] = g[f];
    int64_t corner[3];
    float frac[3];
    cell(x + n * 3, lv.scale, corner, frac);
    for (int c = 0; c < 8; ++c) {
        float* row = grad_table + corner_row(lv, corner, c) * F;
        const float w = corner_weight(frac, c);
        for (int f = 0; f < F; ++f) atomicAdd(row + f, w * gf[f]);
    }
}

template <int F>
int launch_forward(const float* x, const float* table, const float* scales, const int64_t* resolutions,
                   const int64_t* sizes, const int64_t* offsets, const uint8_t* dense, int64_t n_points,
                   int n_levels, int active_levels, float* out, cudaStream_t stream) {
    const dim3 blocks(static_cast<unsigned>((n_points + kThreads - 1) / kThreads), n_levels);
    forward_kernel<F><<<blocks, kThreads, 0, stream>>>(x, table, scales, resolutions, sizes, offsets, dense,
                                                       n_points, n_levels, active_levels, out);
    return static_cast<int>(cudaGetLastError());
}

template <int F>
int launch_backward(const float* x, const float* grad_out, const float* scales, const int64_t* resolutions,
                    const int64_t* sizes, const int64_t* offsets, const uint8_t* dense, int64_t n_points,
                    int n_levels, int active_levels, float* grad_table, cudaStream_t stream) {
    const dim3 blocks(static_cast<unsigned>((n_points + kThreads - 1) / kThreads), n_levels);
    backward_kernel<F><<<blocks, kThreads, 0, stream>>>(x, grad_out, scales, resolutions, sizes, offsets, dense,
                                                        n_points, n_levels, active_levels, grad_table);
    return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" {

// Both launchers return a cudaError_t as int (0 on success, -1 for an unsupported feature count).
// out is [N, L, F] and fully written (zeros for levels >= active_levels); grad_table [P, F] must be
// zeroed by the caller and only gains the active levels' contributions.

int sds3d_hashgrid_forward(const float* x, const float* table, const float* scales, const int64_t* resolutions,
                           const int64_t* sizes, const int64_t* offsets, const uint8_t* dense, int64_t n_points,
                           int n_levels, int active_levels, int features, float* out, int64_t stream) {
    if (n_points == 0) return 0;
    cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    switch (features) {
        case 1: return launch_forward<1>(x, table, scales, resolutions, sizes, offsets, dense, n_points, n_levels, active_levels, out, s);
        case 2: return launch_forward<2>(x, table, scales, resolutions, sizes, offsets, dense, n_points, n_levels, active_levels, out, s);
        case 4: return launch_forward<4>(x, table, scales, resolutions, sizes, offsets, dense, n_points, n_levels, active_levels, out, s);
        case 8: return launch_forward<8>(x, table, scales, resolutions, sizes, offsets, dense, n_points, n_levels, active_levels, out, s);
        default: return -1;
    }
}

int sds3d_hashgrid_backward(const float* x, const float* grad_out, const float* scales, const int64_t* resolutions,
                            const int64_t* sizes, const int64_t* offsets, const uint8_t* dense, int64_t n_points,
                            int n_levels, int active_levels, int features, float* grad_table, int64_t stream) {
    if (n_points == 0) return 0;
    cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    switch (features) {
        case 1: return launch_backward<1>(x, grad_out, scales, resolutions, sizes, offsets, dense, n_points, n_levels, active_levels, grad_table, s);
        case 2: return launch_backward<2>(x, grad_out, scales, resolutions, sizes, offsets, dense, n_points, n_levels, active_levels, grad_table, s);
        case 4: return launch_backward<4>(x, grad_out, scales, resolutions, sizes, offsets, dense, n_points, n_levels, active_levels, grad_table, s);
        case 8: return launch_backward<8>(x, grad_out, scales, resolutions, sizes, offsets, dense, n_points, n_levels, active_levels, grad_table, s);
        default: return -1;
    }
}

const char* sds3d_hashgrid_error_string(int code) {
    return code == -1 ? "features per level must be 1, 2, 4 or 8" : cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // extern "C"
