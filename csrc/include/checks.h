// Argument checks shared by the CPU and CUDA entry points. Each failure is a
// Python ValueError that names the op, the argument and what was expected.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <string>
#include <utility>

namespace dbp {

inline void check_images(const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "dbp.", op,
                    ": argument '", name, "' must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(0) > 0 && x.numel() > 0, "dbp.", op, ": argument '", name,
                    "' must be a non-empty batch (first dimension = samples), got shape ", x.sizes());
}

inline void check_uids(const at::Tensor& uids, int64_t batch, const at::Device& device, const char* op) {
  TORCH_CHECK_VALUE(uids.scalar_type() == at::kLong, "dbp.", op,
                    ": argument 'uids' must be int64 sample ids, got ", uids.scalar_type());
  TORCH_CHECK_VALUE(uids.dim() == 1 && uids.numel() == batch, "dbp.", op,
                    ": argument 'uids' must be 1-D with one id per sample (", batch, "), got shape ",
                    uids.sizes());
  TORCH_CHECK_VALUE(uids.device() == device, "dbp.", op, ": argument 'uids' must be on ", device,
                    " like the data, got ", uids.device());
}

// The shape of dbp.normal: starts with one row per uid, every dimension positive.
inline void check_normal_shape(at::IntArrayRef shape, const at::Tensor& uids) {
  TORCH_CHECK_VALUE(!shape.empty() && shape[0] == uids.numel(), "dbp.normal: argument 'shape' must start with ",
                    "the number of uids (", uids.numel(), "), got ", shape);
  for (const auto d : shape) {
    TORCH_CHECK_VALUE(d > 0, "dbp.normal: argument 'shape' must have positive dimensions, got ", shape);
  }
}

// step and stream are 32-bit address fields (philox.h).
inline void check_address(int64_t stream, int64_t step, const char* op) {
  TORCH_CHECK_VALUE(stream >= 0 && stream < (int64_t(1) << 32), "dbp.", op,
                    ": argument 'stream' must be in [0, 2^32), got ", stream);
  TORCH_CHECK_VALUE(step >= 0 && step < (int64_t(1) << 32), "dbp.", op,
                    ": argument 'step' must be in [0, 2^32), got ", step);
}

inline void check_like(const at::Tensor& a, const at::Tensor& ref, const char* op, const char* name,
                       const char* ref_name) {
  TORCH_CHECK_VALUE(a.sizes() == ref.sizes() && a.scalar_type() == ref.scalar_type() &&
                        a.device() == ref.device(),
                    "dbp.", op, ": argument '", name, "' must match '", ref_name, "' (shape ", ref.sizes(),
                    ", ", ref.scalar_type(), ", ", ref.device(), "), got shape ", a.sizes(), ", ",
                    a.scalar_type(), ", ", a.device());
}

// Whether every value of a coefficient is finite. A float/double CPU tensor
// (the usual case: a few scalars per call) is read directly, without the
// three small tensor ops and the allocation of isfinite(c).all().
inline bool all_finite(const at::Tensor& c) {
  if (c.device().is_cpu() && (c.scalar_type() == at::kFloat || c.scalar_type() == at::kDouble)) {
    const auto cc = c.contiguous();
    bool ok = true;
    AT_DISPATCH_FLOATING_TYPES(cc.scalar_type(), "dbp_all_finite", [&] {
      const scalar_t* p = cc.data_ptr<scalar_t>();
      for (int64_t i = 0; i < cc.numel(); ++i) ok = ok && std::isfinite(p[i]);
    });
    return ok;
  }
  return at::isfinite(c).all().item<bool>();
}

// A per-sample coefficient: one value or one per sample, finite. Returned
// contiguous, in the data's dtype and on its device.
inline at::Tensor coefficient(const at::Tensor& c, const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK_VALUE(c.is_floating_point(), "dbp.", op, ": argument '", name,
                    "' must be a floating tensor, got ", c.scalar_type());
  TORCH_CHECK_VALUE(c.numel() == 1 || (c.dim() == 1 && c.numel() == x.size(0)), "dbp.", op,
                    ": argument '", name, "' must hold one value or one per sample (", x.size(0),
                    "), got shape ", c.sizes());
  TORCH_CHECK_VALUE(all_finite(c), "dbp.", op, ": argument '", name, "' must be finite, got ", c.to(at::kCPU));
  return c.reshape({c.numel()}).to(x.device(), x.scalar_type()).contiguous();
}

// How a noise scale (sigma) is laid out: one value, one per sample, or one per element.
enum class Layout : int { kShared = 0, kPerSample = 1, kPerElement = 2 };

// The noise scale sigma of a reverse step: one value, one per sample, or one per element (the
// shape of x: a learned variance, docs/science.md, "Learned variance"), finite. Returned
// contiguous, in the data's dtype and on its device, with its layout.
inline std::pair<at::Tensor, Layout> noise_scale(const at::Tensor& c, const at::Tensor& x, const char* op,
                                                 const char* name) {
  if (c.dim() > 1) {  // per element (a [B] sigma of [B] data is the same per sample)
    TORCH_CHECK_VALUE(c.sizes() == x.sizes(), "dbp.", op, ": argument '", name,
                      "' must hold one value, one per sample (", x.size(0), ") or one per element (shape ",
                      x.sizes(), "), got shape ", c.sizes());
    TORCH_CHECK_VALUE(c.is_floating_point(), "dbp.", op, ": argument '", name,
                      "' must be a floating tensor, got ", c.scalar_type());
    TORCH_CHECK_VALUE(all_finite(c), "dbp.", op, ": argument '", name, "' must be finite");
    TORCH_CHECK_VALUE(c.device() == x.device(), "dbp.", op, ": argument '", name, "' must be on ", x.device(),
                      " like the data, got ", c.device());
    return {c.to(x.scalar_type()).contiguous(), Layout::kPerElement};
  }
  auto v = coefficient(c, x, op, name);
  return {v, v.numel() > 1 ? Layout::kPerSample : Layout::kShared};
}

}  // namespace dbp
