// CPU kernel of dbp::rbgm (rank-based Gaussian mapping, docs/science.md "RBGM"):
// per row, an addressed Gaussian sample is sorted and the k-th smallest value
// goes to the position whose gradient has rank k (ties: lower index first).
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "../include/op_args.h"
#include "../include/rbgm_layout.h"
#include "noise_fill.h"

namespace dbp {
namespace {

at::Tensor rbgm_cpu(const at::Tensor& g, int64_t seed, int64_t stream, const at::Tensor& uids, int64_t step) {
  check_rbgm_args(g, uids, stream, step);
  const auto gc = g.contiguous(), ids = uids.contiguous();
  auto out = at::empty_like(gc);
  const int64_t B = gc.size(0), N = gc.numel() / B, L = rbgm_row_length(gc), rows_per = N / L;
  const int64_t* idp = ids.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "dbp_rbgm", [&] {
    const scalar_t* gp = gc.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * rows_per, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> z;
      std::vector<int64_t> order(L);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / rows_per, e0 = (r % rows_per) * L;
        // normals of elements e0 .. e0+L-1, generated over whole Philox blocks
        const int64_t first = e0 / 4, last = (e0 + L + 3) / 4;
        z.resize(4 * (last - first));
        fill_normals(seed, stream, idp[b], step, first, last - first, z.data());
        float* zr = z.data() + (e0 - 4 * first);
        std::sort(zr, zr + L);
        const scalar_t* gr = gp + b * N + e0;
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return gr[i] < gr[j]; });
        scalar_t* orow = o + b * N + e0;
        for (int64_t k = 0; k < L; ++k) orow[order[k]] = static_cast<scalar_t>(zr[k]);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dbp, CPU, m) { m.impl("rbgm", &rbgm_cpu); }

}  // namespace dbp
