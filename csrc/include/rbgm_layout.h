// Row layout of the RBGM op: a [B, C, *spatial] tensor is B*C rows of
// prod(spatial) values (one row per image channel); a [B, N] tensor is one
// row per sample. Row (b, c) uses the sample's noise elements c*L .. c*L+L-1.
#pragma once
#include <ATen/ATen.h>

namespace dbp {

inline int64_t rbgm_row_length(const at::Tensor& g) {
  return g.dim() >= 3 ? g.numel() / (g.size(0) * g.size(1)) : g.numel() / g.size(0);
}

}  // namespace dbp
