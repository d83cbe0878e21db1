// CUDA kernels of dbp::normal, dbp::q_sample, dbp::ddpm_step and dbp::clipped_step: one thread
// per Philox block (4 elements of one sample), the math of the shared headers. The arguments are
// checked by op_args.h, and the ops registered by diffusion_ops.h, as for the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../include/diffusion_ops.h"
#include "../include/op_args.h"

namespace dbp {
namespace {

constexpr int kThreads = 256;

struct Address {
  uint64_t seed, stream, step;
  const int64_t* uids;
};

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
  const T* x;
  CoefView<T, 2> c;
  T* out;
  __device__ bool needs_noise(int64_t) const { return true; }
  __device__ void operator()(int64_t b, int64_t e, float z) const {
    out[e] = q_sample_elem(x[e], c.at(0, b), c.at(1, b), z);
  }
};

// ddpm_step and clipped_step: out = Step(x_t, eps, the sample's coefficients, sigma, z).
template <typename T, typename Step, int K>
struct StepOp {
  const T *x, *eps;
  CoefView<T, K> c;
  SigmaView<T> sg;
  T* out;
  __device__ bool needs_noise(int64_t b) const { return sg.needs_noise(b); }
  __device__ void operator()(int64_t b, int64_t e, float z) const {
    T cb[K];
    c.of_sample(b, cb);
    out[e] = Step{}(x[e], eps[e], cb, sg.at(b, e), z);
  }
};

// The kernels DiffusionOps<Cuda> registers (diffusion_ops.h).
struct Cuda {
  static at::Tensor normal(at::IntArrayRef shape, int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step,
                           std::optional<at::ScalarType> dtype) {
    const auto in = normal_args(shape, uids, stream, step, dtype);
    const c10::cuda::CUDAGuard guard(in.x.device());
    AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "dbp_normal_cuda", [&] {
      launch(in.B, in.N, in.ids, seed, stream, step, NormalOp<scalar_t>{in.x.data_ptr<scalar_t>()});
    });
    return in.x;
  }

  static at::Tensor q_sample(const at::Tensor& x0, const at::Tensor& sqrt_ab, const at::Tensor& sqrt_1mab,
                             int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step) {
    const auto in = q_sample_args(x0, sqrt_ab, sqrt_1mab, uids, stream, step);
    const c10::cuda::CUDAGuard guard(in.x.device());
    auto out = at::empty_like(in.x);
    AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "dbp_q_sample_cuda", [&] {
      launch(in.B, in.N, in.ids, seed, stream, step,
             QSampleOp<scalar_t>{in.x.data_ptr<scalar_t>(), in.coefs<scalar_t>(), out.data_ptr<scalar_t>()});
    });
    return out;
  }

  template <typename Step>
  static at::Tensor reverse_step(const at::Tensor& x_t, const at::Tensor& eps,
                                 const std::array<at::Tensor, kCoefsOf<Step>>& c, const at::Tensor& sigma,
                                 int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step) {
    const auto in = step_args<Step>(x_t, eps, c, sigma, uids, stream, step);
    const c10::cuda::CUDAGuard guard(in.x.device());
    auto out = at::empty_like(in.x);
    AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), Step::kOp, [&] {
      launch(in.B, in.N, in.ids, seed, stream, step,
             StepOp<scalar_t, Step, kCoefsOf<Step>>{in.x.template data_ptr<scalar_t>(),
                                                     in.eps.template data_ptr<scalar_t>(),
                                                     in.template coefs<scalar_t>(), in.template noise_scale<scalar_t>(),
                                                     out.template data_ptr<scalar_t>()});
    });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(dbp, CUDA, m) { DiffusionOps<Cuda>::register_kernels(m); }

}  // namespace dbp
