// CUDA kernels of dbp::normal, dbp::q_sample, dbp::ddpm_step and dbp::clipped_step: one thread
// per Philox block (4 elements of one sample), the math of the shared headers.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../include/checks.h"
#include "../include/diffusion_math.h"

namespace dbp {
namespace {

constexpr int kThreads = 256;

struct Address {
  uint64_t seed, stream, step;
  const int64_t* uids;
};

// Coefficient of sample b: one shared value or one per sample.
template <typename T>
__device__ __forceinline__ T coef(const T* c, bool per_sample, int64_t b) {
  return c[per_sample ? b : 0];
}

// Applies op(b, element, z) to every element of a [B, N] problem.
template <typename Op>
__global__ void noise_kernel(int64_t B, int64_t N, Address a, Op op) {
  const int64_t blocks = (N + 3) / 4;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * blocks) return;
  const int64_t b = i / blocks, k = i % blocks;
  float z[4] = {0.f, 0.f, 0.f, 0.f};
  if (op.needs_noise(b)) normal4(a.seed, a.stream, static_cast<uint64_t>(a.uids[b]), a.step, k, z);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t e = 4 * k + j;
    if (e < N) op(b, b * N + e, z[j]);
  }
}

template <typename Op>
void launch(int64_t B, int64_t N, const at::Tensor& uids, int64_t seed, int64_t stream, int64_t step, Op op) {
  const int64_t threads = B * ((N + 3) / 4);
  const int grid = static_cast<int>((threads + kThreads - 1) / kThreads);
  Address a{static_cast<uint64_t>(seed), static_cast<uint64_t>(stream), static_cast<uint64_t>(step),
            uids.data_ptr<int64_t>()};
  noise_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(B, N, a, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
struct NormalOp {
  T* out;
  __device__ bool needs_noise(int64_t) const { return true; }
  __device__ void operator()(int64_t, int64_t e, float z) const { out[e] = static_cast<T>(z); }
};

template <typename T>
struct QSampleOp {
  const T *x, *a, *s;
  bool ab, sb;
  T* out;
  __device__ bool needs_noise(int64_t) const { return true; }
  __device__ void operator()(int64_t b, int64_t e, float z) const {
    out[e] = q_sample_elem(x[e], coef(a, ab, b), coef(s, sb, b), z);
  }
};

// A noise scale of any layout (checks.h, noise_scale); e is the flat index b * N + element.
template <typename T>
struct Sigma {
  const T* p;
  Layout layout;
  int64_t N;
  __device__ __forceinline__ T at(int64_t b, int64_t e) const {
    return p[layout == Layout::kPerElement ? e : (layout == Layout::kPerSample ? b : 0)];
  }
  __device__ __forceinline__ bool needs_noise(int64_t b) const {
    return layout == Layout::kPerElement || at(b, 0) != T(0);
  }
};

template <typename T>
struct DdpmStepOp {
  const T *x, *eps, *cx, *ce;
  bool cxb, ceb;
  Sigma<T> sg;
  T* out;
  __device__ bool needs_noise(int64_t b) const { return sg.needs_noise(b); }
  __device__ void operator()(int64_t b, int64_t e, float z) const {
    out[e] = ddpm_step_elem(x[e], eps[e], coef(cx, cxb, b), coef(ce, ceb, b), sg.at(b, e), z);
  }
};

template <typename T>
struct ClippedStepOp {
  const T *x, *eps, *a, *bc, *c0, *c1;
  bool ab, bb, c0b, c1b;
  Sigma<T> sg;
  T* out;
  __device__ bool needs_noise(int64_t b) const { return sg.needs_noise(b); }
  __device__ void operator()(int64_t b, int64_t e, float z) const {
    out[e] = clipped_step_elem(x[e], eps[e], coef(a, ab, b), coef(bc, bb, b), coef(c0, c0b, b), coef(c1, c1b, b),
                               sg.at(b, e), z);
  }
};

at::Tensor normal_cuda(at::IntArrayRef shape, int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step,
                       std::optional<at::ScalarType> dtype) {
  check_normal_shape(shape, uids);
  check_uids(uids, shape[0], uids.device(), "normal");
  check_address(stream, step, "normal");
  const c10::cuda::CUDAGuard guard(uids.device());
  auto out = at::empty(shape, uids.options().dtype(dtype.value_or(at::kFloat)));
  check_images(out, "normal", "shape/dtype");
  const auto ids = uids.contiguous();
  const int64_t B = shape[0], N = out.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "dbp_normal_cuda", [&] {
    launch(B, N, ids, seed, stream, step, NormalOp<scalar_t>{out.data_ptr<scalar_t>()});
  });
  return out;
}

at::Tensor q_sample_cuda(const at::Tensor& x0, const at::Tensor& sqrt_ab, const at::Tensor& sqrt_1mab,
                         int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step) {
  check_images(x0, "q_sample", "x0");
  check_uids(uids, x0.size(0), x0.device(), "q_sample");
  check_address(stream, step, "q_sample");
  const c10::cuda::CUDAGuard guard(x0.device());
  const auto x = x0.contiguous(), ids = uids.contiguous();
  const auto a = coefficient(sqrt_ab, x, "q_sample", "sqrt_ab");
  const auto s = coefficient(sqrt_1mab, x, "q_sample", "sqrt_1mab");
  auto out = at::empty_like(x);
  const int64_t B = x.size(0), N = x.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dbp_q_sample_cuda", [&] {
    launch(B, N, ids, seed, stream, step,
           QSampleOp<scalar_t>{x.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                               a.numel() > 1, s.numel() > 1, out.data_ptr<scalar_t>()});
  });
  return out;
}

at::Tensor ddpm_step_cuda(const at::Tensor& x_t, const at::Tensor& eps, const at::Tensor& c_x,
                          const at::Tensor& c_eps, const at::Tensor& sigma, int64_t seed, int64_t stream,
                          const at::Tensor& uids, int64_t step) {
  check_images(x_t, "ddpm_step", "x_t");
  check_like(eps, x_t, "ddpm_step", "eps", "x_t");
  check_uids(uids, x_t.size(0), x_t.device(), "ddpm_step");
  check_address(stream, step, "ddpm_step");
  const c10::cuda::CUDAGuard guard(x_t.device());
  const auto x = x_t.contiguous(), e = eps.contiguous(), ids = uids.contiguous();
  const auto cx = coefficient(c_x, x, "ddpm_step", "c_x");
  const auto ce = coefficient(c_eps, x, "ddpm_step", "c_eps");
  const auto [sg, sgl] = noise_scale(sigma, x, "ddpm_step", "sigma");
  auto out = at::empty_like(x);
  const int64_t B = x.size(0), N = x.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dbp_ddpm_step_cuda", [&] {
    launch(B, N, ids, seed, stream, step,
           DdpmStepOp<scalar_t>{x.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), cx.data_ptr<scalar_t>(),
                                ce.data_ptr<scalar_t>(), cx.numel() > 1, ce.numel() > 1,
                                Sigma<scalar_t>{sg.data_ptr<scalar_t>(), sgl, N}, out.data_ptr<scalar_t>()});
  });
  return out;
}

at::Tensor clipped_step_cuda(const at::Tensor& x_t, const at::Tensor& eps, const at::Tensor& a,
                             const at::Tensor& b, const at::Tensor& c0, const at::Tensor& c1,
                             const at::Tensor& sigma, int64_t seed, int64_t stream, const at::Tensor& uids,
                             int64_t step) {
  check_images(x_t, "clipped_step", "x_t");
  check_like(eps, x_t, "clipped_step", "eps", "x_t");
  check_uids(uids, x_t.size(0), x_t.device(), "clipped_step");
  check_address(stream, step, "clipped_step");
  const c10::cuda::CUDAGuard guard(x_t.device());
  const auto x = x_t.contiguous(), e = eps.contiguous(), ids = uids.contiguous();
  const auto ca = coefficient(a, x, "clipped_step", "a");
  const auto cb = coefficient(b, x, "clipped_step", "b");
  const auto k0 = coefficient(c0, x, "clipped_step", "c0");
  const auto k1 = coefficient(c1, x, "clipped_step", "c1");
  const auto [sg, sgl] = noise_scale(sigma, x, "clipped_step", "sigma");
  auto out = at::empty_like(x);
  const int64_t B = x.size(0), N = x.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dbp_clipped_step_cuda", [&] {
    launch(B, N, ids, seed, stream, step,
           ClippedStepOp<scalar_t>{x.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), ca.data_ptr<scalar_t>(),
                                   cb.data_ptr<scalar_t>(), k0.data_ptr<scalar_t>(), k1.data_ptr<scalar_t>(),
                                   ca.numel() > 1, cb.numel() > 1, k0.numel() > 1, k1.numel() > 1,
                                   Sigma<scalar_t>{sg.data_ptr<scalar_t>(), sgl, N}, out.data_ptr<scalar_t>()});
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dbp, CUDA, m) {
  m.impl("normal", &normal_cuda);
  m.impl("q_sample", &q_sample_cuda);
  m.impl("ddpm_step", &ddpm_step_cuda);
  m.impl("clipped_step", &clipped_step_cuda);
}

}  // namespace dbp
