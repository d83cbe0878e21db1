// CPU driver for addressed noise: splits a [B, N] problem into chunks of
// whole Philox blocks, fills each chunk's normals, hands them to a callback.
#pragma once
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstdint>

namespace dbp {

constexpr int64_t kChunk = 1024;  // elements per chunk, a multiple of 4

// z[0 .. 4*nblocks) = normals of blocks block0 .. block0+nblocks-1 of one
// (seed, stream, uid, step) address (philox.h::normal4, vectorised).
void fill_normals(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step, uint64_t block0,
                  int64_t nblocks, float* z);

// Calls fn(b, e0, n, z) for every chunk of every sample, in parallel; z holds
// the sample's normals at elements e0 .. e0+n-1, or zeros when
// needs_noise(b) is false (a sigma = 0 step draws nothing).
template <typename NeedsNoise, typename Fn>
void for_each_noise_chunk(int64_t B, int64_t N, const int64_t* uids, int64_t seed, int64_t stream,
                          int64_t step, NeedsNoise needs_noise, Fn fn) {
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  at::parallel_for(0, B * chunks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float z[kChunk];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / chunks, e0 = (i % chunks) * kChunk;
      const int64_t n = std::min(kChunk, N - e0);
      if (needs_noise(b)) {
        fill_normals(seed, stream, uids[b], step, e0 / 4, (n + 3) / 4, z);
      } else {
        std::fill(z, z + n, 0.0f);
      }
      fn(b, e0, n, z);
    }
  });
}

}  // namespace dbp
