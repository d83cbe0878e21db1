// The fused diffusion ops of one backend (cpu/diffusion_ops.cpp, cuda/diffusion_ops.cu) as the
// schemas of csrc/ops.cpp take them, and their registration: a backend supplies
//   Backend::normal and Backend::q_sample  (the schemas' own signatures), and
//   Backend::reverse_step<Step>(x_t, eps, {coefficients}, sigma, seed, stream, uids, step)
// for the reverse steps (diffusion_math.h: DdpmStep, ClippedStep).
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include "diffusion_math.h"

namespace dbp {

template <typename Backend>
struct DiffusionOps {
  static at::Tensor ddpm_step(const at::Tensor& x_t, const at::Tensor& eps, const at::Tensor& c_x,
                              const at::Tensor& c_eps, const at::Tensor& sigma, int64_t seed, int64_t stream,
                              const at::Tensor& uids, int64_t step) {
    return Backend::template reverse_step<DdpmStep>(x_t, eps, {c_x, c_eps}, sigma, seed, stream, uids, step);
  }

  static at::Tensor clipped_step(const at::Tensor& x_t, const at::Tensor& eps, const at::Tensor& a,
                                 const at::Tensor& b, const at::Tensor& c0, const at::Tensor& c1,
                                 const at::Tensor& sigma, int64_t seed, int64_t stream, const at::Tensor& uids,
                                 int64_t step) {
    return Backend::template reverse_step<ClippedStep>(x_t, eps, {a, b, c0, c1}, sigma, seed, stream, uids, step);
  }

  // Inside TORCH_LIBRARY_IMPL(dbp, <dispatch key>, m).
  static void register_kernels(torch::Library& m) {
    m.impl("normal", &Backend::normal);
    m.impl("q_sample", &Backend::q_sample);
    m.impl("ddpm_step", &ddpm_step);
    m.impl("clipped_step", &clipped_step);
  }
};

}  // namespace dbp
