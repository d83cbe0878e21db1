#include "noise_fill.h"

#include "../include/philox.h"

namespace dbp {

// Structure-of-arrays passes so the compiler vectorises Philox and
// Box-Muller across blocks; built for AVX2 and a portable baseline, chosen
// at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void fill_chunk(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step, uint64_t block0,
                       int64_t nblocks, float* z) {
  constexpr int64_t kB = kChunk / 4;
  uint32_t r0[kB], r1[kB], r2[kB], r3[kB];
  float z0[kB], z1[kB], z2[kB], z3[kB];
  for (int64_t i = 0; i < nblocks; ++i) {
    const U4 r = noise_bits(seed, stream, uid, step, block0 + i);
    r0[i] = r.x;
    r1[i] = r.y;
    r2[i] = r.z;
    r3[i] = r.w;
  }
  for (int64_t i = 0; i < nblocks; ++i) box_muller(r0[i], r1[i], z0[i], z1[i]);
  for (int64_t i = 0; i < nblocks; ++i) box_muller(r2[i], r3[i], z2[i], z3[i]);
  for (int64_t i = 0; i < nblocks; ++i) {
    z[4 * i] = z0[i];
    z[4 * i + 1] = z1[i];
    z[4 * i + 2] = z2[i];
    z[4 * i + 3] = z3[i];
  }
}

void fill_normals(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step, uint64_t block0,
                  int64_t nblocks, float* z) {
  for (int64_t done = 0; done < nblocks; done += kChunk / 4) {
    fill_chunk(seed, stream, uid, step, block0 + done, std::min(kChunk / 4, nblocks - done), z + 4 * done);
  }
}

}  // namespace dbp
