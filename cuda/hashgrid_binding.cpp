// Torch-facing side of hashgrid.cu: checks the tensors, allocates outputs and calls the extern "C"
// launchers with raw pointers. Needs only torch/extension.h, so it compiles against the CPU build
// of torch too (CI checks it there); on a CUDA machine both files link into one extension.

#include <torch/extension.h>

#include <cstdint>
#include <vector>

extern "C" {
int sds3d_hashgrid_forward(const float* x, const float* table, const float* scales, const int64_t* resolutions,
                           const int64_t* sizes, const int64_t* offsets, const uint8_t* dense, int64_t n_points,
                           int n_levels, int active_levels, int features, float* out, int64_t stream);
int sds3d_hashgrid_backward(const float* x, const float* grad_out, const float* scales, const int64_t* resolutions,
                            const int64_t* sizes, const int64_t* offsets, const uint8_t* dense, int64_t n_points,
                            int n_levels, int active_levels, int features, float* grad_table, int64_t stream);
const char* sds3d_hashgrid_error_string(int code);
}

namespace {

void check(const torch::Tensor& t, const char* name, torch::ScalarType dtype, int64_t dim) {
    TORCH_CHECK(t.is_cuda(), "hash grid kernel: ", name, " must be a CUDA tensor");
    TORCH_CHECK(t.scalar_type() == dtype, "hash grid kernel: ", name, " must be ", c10::toString(dtype));
    TORCH_CHECK(t.is_contiguous(), "hash grid kernel: ", name, " must be contiguous");
    TORCH_CHECK(t.dim() == dim, "hash grid kernel: ", name, " must have ", dim, " dims");
}

void check_layout(const torch::Tensor& scales, const torch::Tensor& resolutions, const torch::Tensor& sizes,
                  const torch::Tensor& offsets, const torch::Tensor& dense) {
    check(scales, "scales", torch::kFloat32, 1);
    check(resolutions, "resolutions", torch::kInt64, 1);
    check(sizes, "sizes", torch::kInt64, 1);
    check(offsets, "offsets", torch::kInt64, 1);
    check(dense, "dense", torch::kUInt8, 1);
    const int64_t n_levels = scales.size(0);
    TORCH_CHECK(resolutions.size(0) == n_levels && sizes.size(0) == n_levels && offsets.size(0) == n_levels &&
                    dense.size(0) == n_levels,
                "hash grid kernel: scales, resolutions, sizes, offsets and dense need one entry per level");
}

}  // namespace

// x [N, 3], table [P, F] -> [N, L, F]; levels >= active_levels are zeros.
torch::Tensor forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales, torch::Tensor resolutions,
                      torch::Tensor sizes, torch::Tensor offsets, torch::Tensor dense, int64_t active_levels,
                      int64_t stream) {
    check(x, "x", torch::kFloat32, 2);
    check(table, "table", torch::kFloat32, 2);
    check_layout(scales, resolutions, sizes, offsets, dense);
    TORCH_CHECK(x.size(1) == 3, "hash grid kernel: x must be [N, 3]");
    const int64_t n_levels = scales.size(0), features = table.size(1);
    auto out = torch::empty({x.size(0), n_levels, features}, x.options());
    const int err = sds3d_hashgrid_forward(
        x.data_ptr<float>(), table.data_ptr<float>(), scales.data_ptr<float>(), resolutions.data_ptr<int64_t>(),
        sizes.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(), dense.data_ptr<uint8_t>(), x.size(0),
        static_cast<int>(n_levels), static_cast<int>(active_levels), static_cast<int>(features),
        out.data_ptr<float>(), stream);
    TORCH_CHECK(err == 0, "hash grid forward kernel failed: ", sds3d_hashgrid_error_string(err));
    return out;
}

// grad_out [N, L, F] -> grad_table [table_rows, F] (fp32, accumulated with atomicAdd).
torch::Tensor backward(torch::Tensor x, torch::Tensor grad_out, int64_t table_rows, torch::Tensor scales,
                       torch::Tensor resolutions, torch::Tensor sizes, torch::Tensor offsets, torch::Tensor dense,
                       int64_t active_levels, int64_t stream) {
    check(x, "x", torch::kFloat32, 2);
    check(grad_out, "grad_out", torch::kFloat32, 3);
    check_layout(scales, resolutions, sizes, offsets, dense);
    const int64_t n_levels = scales.size(0), features = grad_out.size(2);
    TORCH_CHECK(grad_out.size(0) == x.size(0) && grad_out.size(1) == n_levels,
                "hash grid kernel: grad_out must be [N, L, F]");
    auto grad_table = torch::zeros({table_rows, features}, grad_out.options());
    const int err = sds3d_hashgrid_backward(
        x.data_ptr<float>(), grad_out.data_ptr<float>(), scales.data_ptr<float>(), resolutions.data_ptr<int64_t>(),
        sizes.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(), dense.data_ptr<uint8_t>(), x.size(0),
        static_cast<int>(n_levels), static_cast<int>(active_levels), static_cast<int>(features),
        grad_table.data_ptr<float>(), stream);
    TORCH_CHECK(err == 0, "hash grid backward kernel failed: ", sds3d_hashgrid_error_string(err));
    return grad_table;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "hash grid encoding forward (CUDA)");
    m.def("backward", &backward, "hash grid encoding backward to the table (CUDA)");
}
