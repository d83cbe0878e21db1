// CUDA dbp::rbgm: the addressed sample comes from dbp::normal's CUDA kernel;
// the per-row sorts use ATen's stable segmented sort on the device, then one
// scatter lays the sorted values out in the gradient's rank order.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../include/op_args.h"
#include "../include/rbgm_layout.h"

namespace dbp {
namespace {

at::Tensor rbgm_cuda(const at::Tensor& g, int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step) {
  check_rbgm_args(g, uids, stream, step);
  const c10::cuda::CUDAGuard guard(g.device());
  static const auto normal = c10::Dispatcher::singleton().findSchemaOrThrow("dbp::normal", "").typed<
      at::Tensor(at::IntArrayRef, int64_t, int64_t, const at::Tensor&, int64_t, std::optional<at::ScalarType>)>();
  const int64_t B = g.size(0), L = rbgm_row_length(g);
  const auto rows = g.contiguous().view({B, -1, L});
  const auto z = normal.call(g.sizes(), seed, stream, uids, step, at::kFloat).view({B, -1, L});
  const auto sorted = std::get<0>(z.sort(/*stable=*/false, /*dim=*/-1, /*descending=*/false));
  const auto order = std::get<1>(rows.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/false));
  return at::empty_like(rows).scatter_(-1, order, sorted.to(g.scalar_type())).view(g.sizes());
}

}  // namespace

TORCH_LIBRARY_IMPL(dbp, CUDA, m) { m.impl("rbgm", &rbgm_cuda); }

}  // namespace dbp
