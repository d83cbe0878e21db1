// Per-element math of the fused diffusion ops, shared by CPU and CUDA.
// z is the addressed standard normal of the element (philox.h); it is
// generated in float32 and cast, so every dtype sees the same noise.
#pragma once
#include "philox.h"

namespace dbp {

// Forward diffusion, DDPM eq. (4): x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) z.
template <typename T>
DBP_HD T q_sample_elem(T x0, T sqrt_ab, T sqrt_1mab, float z) {
  return sqrt_ab * x0 + sqrt_1mab * static_cast<T>(z);
}

// Reverse step, DDPM eq. (11) with the coefficients folded:
// x_{t-1} = c_x (x_t - c_eps eps_theta) + sigma z.  sigma = 0: DDIM (eta = 0).
// The same affine form carries DDIM with eta > 0 and the Euler steps of the
// VP-SDE / probability-flow ODE (docs/science.md, "Reverse VP-SDE").
template <typename T>
DBP_HD T ddpm_step_elem(T x_t, T eps, T c_x, T c_eps, T sigma, float z) {
  return c_x * (x_t - c_eps * eps) + sigma * static_cast<T>(z);
}

// clamp(v, -1, 1); NaN stays NaN (as torch.clamp).
template <typename T>
DBP_HD T clip_unit(T v) {
  return v < T(-1) ? T(-1) : (v > T(1) ? T(1) : v);
}

// Reverse step with the predicted x_0 clipped (docs/science.md, "Clipping the predicted x_0"):
// x0 = clamp(a x_t - b eps, -1, 1)  (DDPM eq. 15 solved for x_0),
// x_prev = c0 x0 + c1 x_t + sigma z  (the eq. 7 posterior mean, or DDIM eq. 12
// with eps re-derived from the clipped x0).
template <typename T>
DBP_HD T clipped_step_elem(T x_t, T eps, T a, T b, T c0, T c1, T sigma, float z) {
  const T x0 = clip_unit(a * x_t - b * eps);
  return c0 * x0 + c1 * x_t + sigma * static_cast<T>(z);
}

// The two reverse steps as the kernels' generic step loop calls them: one element from x_t, eps,
// the sample's coefficients c (in the order of kCoefNames, the op's schema in csrc/ops.cpp),
// sigma and z. kOp and kCoefNames name the op and its arguments in error messages.
struct DdpmStep {
  static constexpr const char* kOp = "ddpm_step";
  static constexpr const char* kCoefNames[] = {"c_x", "c_eps"};
  template <typename T>
  DBP_HD T operator()(T x_t, T eps, const T* c, T sigma, float z) const {
    return ddpm_step_elem(x_t, eps, c[0], c[1], sigma, z);
  }
};

struct ClippedStep {
  static constexpr const char* kOp = "clipped_step";
  static constexpr const char* kCoefNames[] = {"a", "b", "c0", "c1"};
  template <typename T>
  DBP_HD T operator()(T x_t, T eps, const T* c, T sigma, float z) const {
    return clipped_step_elem(x_t, eps, c[0], c[1], c[2], c[3], sigma, z);
  }
};

}  // namespace dbp
