#include "noise_fill.h"

#include <cstdlib>

#include "../include/philox.h"
#include "../include/philox_avx2.h"

namespace dbp {
namespace {

constexpr int64_t kB = kChunk / 4;  // Philox blocks per chunk

// Box-Muller on the Philox words of a chunk, then the normals in element
// order (lane-major within each block). Structure-of-arrays passes, so the
// compiler vectorises them in each caller's instruction set.
__attribute__((always_inline)) inline void finish_chunk(int64_t nblocks, const uint32_t* r0, const uint32_t* r1,
                                                        const uint32_t* r2, const uint32_t* r3, float* z) {
  alignas(32) float z0[kB], z1[kB], z2[kB], z3[kB];
  for (int64_t i = 0; i < nblocks; ++i) box_muller(r0[i], r1[i], z0[i], z1[i]);
  for (int64_t i = 0; i < nblocks; ++i) box_muller(r2[i], r3[i], z2[i], z3[i]);
  for (int64_t i = 0; i < nblocks; ++i) {
    z[4 * i] = z0[i];
    z[4 * i + 1] = z1[i];
    z[4 * i + 2] = z2[i];
    z[4 * i + 3] = z3[i];
  }
}

// Portable path: the scalar Philox of philox.h, left to the auto-vectoriser.
// The Philox words of the chunk's blocks [from, nblocks), one block at a time, split by word.
__attribute__((always_inline)) inline void scalar_bits(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step,
                                                       uint64_t block0, int64_t from, int64_t nblocks, uint32_t* r0,
                                                       uint32_t* r1, uint32_t* r2, uint32_t* r3) {
  for (int64_t i = from; i < nblocks; ++i) {
    const U4 r = noise_bits(seed, stream, uid, step, block0 + i);
    r0[i] = r.x;
    r1[i] = r.y;
    r2[i] = r.z;
    r3[i] = r.w;
  }
}

void fill_chunk_generic(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step, uint64_t block0,
                        int64_t nblocks, float* z) {
  alignas(32) uint32_t r0[kB], r1[kB], r2[kB], r3[kB];
  scalar_bits(seed, stream, uid, step, block0, 0, nblocks, r0, r1, r2, r3);
  finish_chunk(nblocks, r0, r1, r2, r3, z);
}

#if defined(DBP_HAVE_AVX2_PHILOX)
// AVX2 path: Philox on eight consecutive blocks per instruction (philox_avx2.h;
// the same bits as noise_bits), the remainder with the scalar function.
__attribute__((target("avx2"))) void fill_chunk_avx2(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step,
                                                     uint64_t block0, int64_t nblocks, float* z) {
  alignas(32) uint32_t r0[kB], r1[kB], r2[kB], r3[kB];
  const U4 c = noise_counter(block0, uid, step, stream);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i cy = _mm256_set1_epi32(static_cast<int>(c.y)), cz = _mm256_set1_epi32(static_cast<int>(c.z)),
                cw = _mm256_set1_epi32(static_cast<int>(c.w));
  int64_t i = 0;
  for (; i + 8 <= nblocks; i += 8) {
    // counter word 0 = (block0 + i + lane) mod 2^32, as noise_counter takes it
    __m256i x = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c.x + static_cast<uint32_t>(i))), lane);
    __m256i y = cy, zz = cz, w = cw;
    philox4x32_10_x8(x, y, zz, w, k0, k1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(r0 + i), x);
    _mm256_store_si256(reinterpret_cast<__m256i*>(r1 + i), y);
    _mm256_store_si256(reinterpret_cast<__m256i*>(r2 + i), zz);
    _mm256_store_si256(reinterpret_cast<__m256i*>(r3 + i), w);
  }
  scalar_bits(seed, stream, uid, step, block0, i, nblocks, r0, r1, r2, r3);
  finish_chunk(nblocks, r0, r1, r2, r3, z);
}

// DBP_DISABLE_AVX2=1 forces the portable path (tests compare the two).
bool cpu_has_avx2() {
  static const bool has = [] {
    const char* off = std::getenv("DBP_DISABLE_AVX2");
    return __builtin_cpu_supports("avx2") && !(off && *off && *off != '0');
  }();
  return has;
}
#endif

}  // namespace

void fill_normals(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step, uint64_t block0,
                  int64_t nblocks, float* z) {
#if defined(DBP_HAVE_AVX2_PHILOX)
  const bool avx2 = cpu_has_avx2();
#else
  constexpr bool avx2 = false;
#endif
  for (int64_t done = 0; done < nblocks; done += kB) {
    const int64_t n = std::min(kB, nblocks - done);
#if defined(DBP_HAVE_AVX2_PHILOX)
    if (avx2) {
      fill_chunk_avx2(seed, stream, uid, step, block0 + done, n, z + 4 * done);
      continue;
    }
#endif
    fill_chunk_generic(seed, stream, uid, step, block0 + done, n, z + 4 * done);
  }
  (void)avx2;
}

}  // namespace dbp
