// CPU kernels of dbp::normal, dbp::q_sample, dbp::ddpm_step and dbp::clipped_step.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../include/checks.h"
#include "../include/diffusion_math.h"
#include "noise_fill.h"

namespace dbp {
namespace {

constexpr auto kAlways = [](int64_t) { return true; };

at::Tensor normal_cpu(at::IntArrayRef shape, int64_t seed, int64_t stream, const at::Tensor& uids,
                      int64_t step, std::optional<at::ScalarType> dtype) {
  check_normal_shape(shape, uids);
  auto out = at::empty(shape, uids.options().dtype(dtype.value_or(at::kFloat)));
  check_images(out, "normal", "shape/dtype");
  check_uids(uids, shape[0], uids.device(), "normal");
  check_address(stream, step, "normal");
  const auto ids = uids.contiguous();
  const int64_t B = shape[0], N = out.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "dbp_normal", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    for_each_noise_chunk(B, N, ids.data_ptr<int64_t>(), seed, stream, step, kAlways,
                         [&](int64_t b, int64_t e0, int64_t n, const float* z) {
                           scalar_t* ob = o + b * N + e0;
                           for (int64_t i = 0; i < n; ++i) ob[i] = static_cast<scalar_t>(z[i]);
                         });
  });
  return out;
}

at::Tensor q_sample_cpu(const at::Tensor& x0, const at::Tensor& sqrt_ab, const at::Tensor& sqrt_1mab,
                        int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step) {
  check_images(x0, "q_sample", "x0");
  check_uids(uids, x0.size(0), x0.device(), "q_sample");
  check_address(stream, step, "q_sample");
  const auto x = x0.contiguous(), ids = uids.contiguous();
  const auto a = coefficient(sqrt_ab, x, "q_sample", "sqrt_ab");
  const auto s = coefficient(sqrt_1mab, x, "q_sample", "sqrt_1mab");
  auto out = at::empty_like(x);
  const int64_t B = x.size(0), N = x.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dbp_q_sample", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *ap = a.data_ptr<scalar_t>(), *sp = s.data_ptr<scalar_t>();
    const bool ab = a.numel() > 1, sb = s.numel() > 1;
    scalar_t* o = out.data_ptr<scalar_t>();
    for_each_noise_chunk(B, N, ids.data_ptr<int64_t>(), seed, stream, step, kAlways,
                         [&](int64_t b, int64_t e0, int64_t n, const float* z) {
                           const scalar_t A = ap[ab ? b : 0], S = sp[sb ? b : 0];
                           const scalar_t* xb = xp + b * N + e0;
                           scalar_t* ob = o + b * N + e0;
                           for (int64_t i = 0; i < n; ++i) ob[i] = q_sample_elem(xb[i], A, S, z[i]);
                         });
  });
  return out;
}

at::Tensor ddpm_step_cpu(const at::Tensor& x_t, const at::Tensor& eps, const at::Tensor& c_x,
                         const at::Tensor& c_eps, const at::Tensor& sigma, int64_t seed, int64_t stream,
                         const at::Tensor& uids, int64_t step) {
  check_images(x_t, "ddpm_step", "x_t");
  check_like(eps, x_t, "ddpm_step", "eps", "x_t");
  check_uids(uids, x_t.size(0), x_t.device(), "ddpm_step");
  check_address(stream, step, "ddpm_step");
  const auto x = x_t.contiguous(), e = eps.contiguous(), ids = uids.contiguous();
  const auto cx = coefficient(c_x, x, "ddpm_step", "c_x");
  const auto ce = coefficient(c_eps, x, "ddpm_step", "c_eps");
  const auto [sg, sgl] = noise_scale(sigma, x, "ddpm_step", "sigma");
  auto out = at::empty_like(x);
  const int64_t B = x.size(0), N = x.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dbp_ddpm_step", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *ep = e.data_ptr<scalar_t>();
    const scalar_t *cxp = cx.data_ptr<scalar_t>(), *cep = ce.data_ptr<scalar_t>(), *sgp = sg.data_ptr<scalar_t>();
    const bool cxb = cx.numel() > 1, ceb = ce.numel() > 1;
    scalar_t* o = out.data_ptr<scalar_t>();
    for_each_noise_chunk(
        B, N, ids.data_ptr<int64_t>(), seed, stream, step,
        [&](int64_t b) { return sgl == Layout::kPerElement || sgp[layout_index(sgl, b, 0, N)] != scalar_t(0); },
        [&](int64_t b, int64_t e0, int64_t n, const float* z) {
          const scalar_t CX = cxp[cxb ? b : 0], CE = cep[ceb ? b : 0];
          const scalar_t *xb = xp + b * N + e0, *eb = ep + b * N + e0;
          scalar_t* ob = o + b * N + e0;
          if (sgl == Layout::kPerElement) {
            const scalar_t* sb = sgp + b * N + e0;
            for (int64_t i = 0; i < n; ++i) ob[i] = ddpm_step_elem(xb[i], eb[i], CX, CE, sb[i], z[i]);
          } else {
            const scalar_t SG = sgp[layout_index(sgl, b, 0, N)];
            for (int64_t i = 0; i < n; ++i) ob[i] = ddpm_step_elem(xb[i], eb[i], CX, CE, SG, z[i]);
          }
        });
  });
  return out;
}

at::Tensor clipped_step_cpu(const at::Tensor& x_t, const at::Tensor& eps, const at::Tensor& a,
                            const at::Tensor& b, const at::Tensor& c0, const at::Tensor& c1,
                            const at::Tensor& sigma, int64_t seed, int64_t stream, const at::Tensor& uids,
                            int64_t step) {
  check_images(x_t, "clipped_step", "x_t");
  check_like(eps, x_t, "clipped_step", "eps", "x_t");
  check_uids(uids, x_t.size(0), x_t.device(), "clipped_step");
  check_address(stream, step, "clipped_step");
  const auto x = x_t.contiguous(), e = eps.contiguous(), ids = uids.contiguous();
  const auto ca = coefficient(a, x, "clipped_step", "a");
  const auto cb = coefficient(b, x, "clipped_step", "b");
  const auto k0 = coefficient(c0, x, "clipped_step", "c0");
  const auto k1 = coefficient(c1, x, "clipped_step", "c1");
  const auto [sg, sgl] = noise_scale(sigma, x, "clipped_step", "sigma");
  auto out = at::empty_like(x);
  const int64_t B = x.size(0), N = x.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dbp_clipped_step", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *ep = e.data_ptr<scalar_t>();
    const scalar_t *ap = ca.data_ptr<scalar_t>(), *bp = cb.data_ptr<scalar_t>();
    const scalar_t *k0p = k0.data_ptr<scalar_t>(), *k1p = k1.data_ptr<scalar_t>(), *sgp = sg.data_ptr<scalar_t>();
    const bool ab = ca.numel() > 1, bb = cb.numel() > 1, k0b = k0.numel() > 1, k1b = k1.numel() > 1;
    scalar_t* o = out.data_ptr<scalar_t>();
    for_each_noise_chunk(
        B, N, ids.data_ptr<int64_t>(), seed, stream, step,
        [&](int64_t s) { return sgl == Layout::kPerElement || sgp[layout_index(sgl, s, 0, N)] != scalar_t(0); },
        [&](int64_t s, int64_t e0, int64_t n, const float* z) {
          const scalar_t A = ap[ab ? s : 0], Bc = bp[bb ? s : 0], K0 = k0p[k0b ? s : 0], K1 = k1p[k1b ? s : 0];
          const scalar_t *xb = xp + s * N + e0, *eb = ep + s * N + e0;
          scalar_t* ob = o + s * N + e0;
          if (sgl == Layout::kPerElement) {
            const scalar_t* sb = sgp + s * N + e0;
            for (int64_t i = 0; i < n; ++i) ob[i] = clipped_step_elem(xb[i], eb[i], A, Bc, K0, K1, sb[i], z[i]);
          } else {
            const scalar_t SG = sgp[layout_index(sgl, s, 0, N)];
            for (int64_t i = 0; i < n; ++i) ob[i] = clipped_step_elem(xb[i], eb[i], A, Bc, K0, K1, SG, z[i]);
          }
        });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dbp, CPU, m) {
  m.impl("normal", &normal_cpu);
  m.impl("q_sample", &q_sample_cpu);
  m.impl("ddpm_step", &ddpm_step_cpu);
  m.impl("clipped_step", &clipped_step_cpu);
}

}  // namespace dbp
