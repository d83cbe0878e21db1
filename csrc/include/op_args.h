// The argument checks of every dbp op in one place, for the CPU and the CUDA
// entry points alike: each op's checks run in one order and fail with one
// message (checks.h), whatever the backend. What they return is the op's
// inputs made contiguous, in the data's dtype and on its device, and the
// views the kernels read them through (plain structs: they are copied into a
// CUDA kernel's arguments as they are).
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>
#include <type_traits>

#include "checks.h"
#include "diffusion_math.h"

namespace dbp {

// K per-sample coefficients as the kernels read them: each one value or one per sample.
template <typename T, int K>
struct CoefView {
  const T* p[K];
  bool per_sample[K];
  DBP_HD T at(int k, int64_t b) const { return p[k][per_sample[k] ? b : 0]; }
  // The K values of sample b.
  DBP_HD void of_sample(int64_t b, T (&out)[K]) const {
    for (int k = 0; k < K; ++k) out[k] = at(k, b);
  }
};

// A noise scale of any layout (checks.h, noise_scale), indexed by sample b and the flat element
// index e = b * N + element.
template <typename T>
struct SigmaView {
  const T* p;
  Layout layout;
  DBP_HD T at(int64_t b, int64_t e) const {
    return p[layout == Layout::kPerElement ? e : (layout == Layout::kPerSample ? b : 0)];
  }
  // A sample whose scale is 0 everywhere draws no noise (a DDIM step, eta = 0).
  DBP_HD bool needs_noise(int64_t b) const { return layout == Layout::kPerElement || at(b, 0) != T(0); }
};

// The checked inputs of one op on data x of B samples of N elements each. eps and sigma are
// defined for the reverse steps only.
template <int K>
struct OpArgs {
  at::Tensor x, eps, ids, sigma;
  std::array<at::Tensor, K> coef;
  Layout sigma_layout = Layout::kShared;
  int64_t B = 0, N = 0;

  template <typename T>
  CoefView<T, K> coefs() const {
    CoefView<T, K> v{};
    for (int k = 0; k < K; ++k) {
      v.p[k] = coef[k].template data_ptr<T>();
      v.per_sample[k] = coef[k].numel() > 1;
    }
    return v;
  }
  template <typename T>
  SigmaView<T> noise_scale() const {
    return {sigma.template data_ptr<T>(), sigma_layout};
  }
};

// The checks every op on a batch shares: the data, one uid per sample, the address fields.
inline void check_batch(const at::Tensor& x, const char* name, const at::Tensor& uids, int64_t stream,
                        int64_t step, const char* op) {
  check_images(x, op, name);
  check_uids(uids, x.size(0), x.device(), op);
  check_address(stream, step, op);
}

// dbp.normal: the output (allocated on the uids' device, so the shape and dtype are checked as
// data) and the uids; no coefficients.
inline OpArgs<0> normal_args(at::IntArrayRef shape, const at::Tensor& uids, int64_t stream, int64_t step,
                             std::optional<at::ScalarType> dtype) {
  check_normal_shape(shape, uids);
  OpArgs<0> in;
  in.x = at::empty(shape, uids.options().dtype(dtype.value_or(at::kFloat)));
  check_batch(in.x, "shape/dtype", uids, stream, step, "normal");
  in.ids = uids.contiguous();
  in.B = shape[0];
  in.N = in.x.numel() / in.B;
  return in;
}

// dbp.q_sample: x0 and its coefficients (sqrt_ab, sqrt_1mab).
inline OpArgs<2> q_sample_args(const at::Tensor& x0, const at::Tensor& sqrt_ab, const at::Tensor& sqrt_1mab,
                               const at::Tensor& uids, int64_t stream, int64_t step) {
  check_batch(x0, "x0", uids, stream, step, "q_sample");
  OpArgs<2> in;
  in.x = x0.contiguous();
  in.ids = uids.contiguous();
  in.coef = {coefficient(sqrt_ab, in.x, "q_sample", "sqrt_ab"), coefficient(sqrt_1mab, in.x, "q_sample", "sqrt_1mab")};
  in.B = in.x.size(0);
  in.N = in.x.numel() / in.B;
  return in;
}

// How many coefficients a reverse step takes (diffusion_math.h: DdpmStep, ClippedStep).
template <typename Step>
constexpr int kCoefsOf = static_cast<int>(std::extent_v<decltype(Step::kCoefNames)>);

// A reverse step (diffusion_math.h: DdpmStep, ClippedStep): x_t, eps like it, the step's
// coefficients in the order of its schema (csrc/ops.cpp), and sigma.
template <typename Step>
OpArgs<kCoefsOf<Step>> step_args(const at::Tensor& x_t, const at::Tensor& eps,
                               const std::array<at::Tensor, kCoefsOf<Step>>& coefs, const at::Tensor& sigma,
                               const at::Tensor& uids, int64_t stream, int64_t step) {
  check_batch(x_t, "x_t", uids, stream, step, Step::kOp);
  check_like(eps, x_t, Step::kOp, "eps", "x_t");
  OpArgs<kCoefsOf<Step>> in;
  in.x = x_t.contiguous();
  in.eps = eps.contiguous();
  in.ids = uids.contiguous();
  for (int k = 0; k < kCoefsOf<Step>; ++k) in.coef[k] = coefficient(coefs[k], in.x, Step::kOp, Step::kCoefNames[k]);
  std::tie(in.sigma, in.sigma_layout) = noise_scale(sigma, in.x, Step::kOp, "sigma");
  in.B = in.x.size(0);
  in.N = in.x.numel() / in.B;
  return in;
}

// dbp.rbgm: the gradient g is ranked, so it must be finite as well.
inline void check_rbgm_args(const at::Tensor& g, const at::Tensor& uids, int64_t stream, int64_t step) {
  check_batch(g, "g", uids, stream, step, "rbgm");
  TORCH_CHECK_VALUE(at::isfinite(g).all().item<bool>(), "dbp.rbgm: argument 'g' must be finite (it is ranked)");
}

}  // namespace dbp
