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
template <typename T>
DBP_HD T ddpm_step_elem(T x_t, T eps, T c_x, T c_eps, T sigma, float z) {
  return c_x * (x_t - c_eps * eps) + sigma * static_cast<T>(z);
}

}  // namespace dbp
