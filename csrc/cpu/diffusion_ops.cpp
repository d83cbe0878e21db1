// CPU kernels of dbp::normal, dbp::q_sample, dbp::ddpm_step and dbp::clipped_step. The
// arguments are checked by op_args.h, and the ops registered by diffusion_ops.h, as for CUDA.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../include/diffusion_ops.h"
#include "../include/op_args.h"
#include "noise_fill.h"

namespace dbp {
namespace {

constexpr auto kAlways = [](int64_t) { return true; };

// The kernels DiffusionOps<Cpu> registers (diffusion_ops.h).
struct Cpu {
  static at::Tensor normal(at::IntArrayRef shape, int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step,
                           std::optional<at::ScalarType> dtype) {
    const auto in = normal_args(shape, uids, stream, step, dtype);
    const int64_t N = in.N;
    AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "dbp_normal", [&] {
      scalar_t* o = in.x.data_ptr<scalar_t>();
      for_each_noise_chunk(in.B, N, in.ids.data_ptr<int64_t>(), seed, stream, step, kAlways,
                           [&](int64_t b, int64_t e0, int64_t n, const float* z) {
                             scalar_t* ob = o + b * N + e0;
                             for (int64_t i = 0; i < n; ++i) ob[i] = static_cast<scalar_t>(z[i]);
                           });
    });
    return in.x;
  }

  static at::Tensor q_sample(const at::Tensor& x0, const at::Tensor& sqrt_ab, const at::Tensor& sqrt_1mab,
                             int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step) {
    const auto in = q_sample_args(x0, sqrt_ab, sqrt_1mab, uids, stream, step);
    auto out = at::empty_like(in.x);
    const int64_t N = in.N;
    AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "dbp_q_sample", [&] {
      const scalar_t* xp = in.x.data_ptr<scalar_t>();
      const auto coefs = in.coefs<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      for_each_noise_chunk(in.B, N, in.ids.data_ptr<int64_t>(), seed, stream, step, kAlways,
                           [&](int64_t b, int64_t e0, int64_t n, const float* z) {
                             const scalar_t A = coefs.at(0, b), S = coefs.at(1, b);
                             const scalar_t* xb = xp + b * N + e0;
                             scalar_t* ob = o + b * N + e0;
                             for (int64_t i = 0; i < n; ++i) ob[i] = q_sample_elem(xb[i], A, S, z[i]);
                           });
    });
    return out;
  }

  // ddpm_step and clipped_step: out = Step(x_t, eps, the sample's coefficients, sigma, z) per
  // element, over chunks of one sample (noise_fill.h). The two sigma layouts get their own loops so
  // that a shared or per-sample sigma is read once per chunk.
  template <typename Step>
  static at::Tensor reverse_step(const at::Tensor& x_t, const at::Tensor& eps,
                                 const std::array<at::Tensor, kCoefsOf<Step>>& c, const at::Tensor& sigma,
                                 int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step) {
    constexpr int K = kCoefsOf<Step>;
    const auto in = step_args<Step>(x_t, eps, c, sigma, uids, stream, step);
    auto out = at::empty_like(in.x);
    const int64_t N = in.N;
    AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), Step::kOp, [&] {
      const scalar_t *xp = in.x.template data_ptr<scalar_t>(), *ep = in.eps.template data_ptr<scalar_t>();
      const auto coefs = in.template coefs<scalar_t>();
      const auto sg = in.template noise_scale<scalar_t>();
      scalar_t* o = out.template data_ptr<scalar_t>();
      const int64_t* ids = in.ids.template data_ptr<int64_t>();
      for_each_noise_chunk(
          in.B, N, ids, seed, stream, step, [&](int64_t b) { return sg.needs_noise(b); },
          [&](int64_t b, int64_t e0, int64_t n, const float* z) {
            scalar_t cb[K];
            coefs.of_sample(b, cb);
            const int64_t off = b * N + e0;  // flat index of the chunk's first element
            const scalar_t *xb = xp + off, *eb = ep + off;
            scalar_t* ob = o + off;
            if (sg.layout == Layout::kPerElement) {
              const scalar_t* sb = sg.p + off;
              for (int64_t i = 0; i < n; ++i) ob[i] = Step{}(xb[i], eb[i], cb, sb[i], z[i]);
            } else {
              const scalar_t s = sg.at(b, off);
              for (int64_t i = 0; i < n; ++i) ob[i] = Step{}(xb[i], eb[i], cb, s, z[i]);
            }
          });
    });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(dbp, CPU, m) { DiffusionOps<Cpu>::register_kernels(m); }

}  // namespace dbp
