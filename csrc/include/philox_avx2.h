// Philox4x32-10 on eight counters at once with AVX2 integer intrinsics (CPU
// only). The same rounds, constants and key schedule as philox.h's
// philox4x32_10, lane by lane, in integer arithmetic: every lane's output
// bits are identical to the scalar function's (tests/test_ops.py compares
// the kernels with the pure-PyTorch reference). Compiled only into functions
// marked __attribute__((target("avx2"))) and called after a runtime check.
#pragma once
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#include <immintrin.h>

#include "philox.h"

#define DBP_HAVE_AVX2_PHILOX 1
#define DBP_AVX2 __attribute__((target("avx2"), always_inline)) inline

namespace dbp {

// (hi, lo) of the 32x32 -> 64 bit products a[l] * m, for the eight 32-bit lanes l.
DBP_AVX2 void mulhilo8(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6 (64-bit products)
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// philox4x32_10 of the counters (x[l], y, z, w) for lanes l (x varies, the
// other words are shared), key (k0, k1). Results in x, y, z, w.
DBP_AVX2 void philox4x32_10_x8(__m256i& x, __m256i& y, __m256i& z, __m256i& w, uint32_t k0, uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  for (int r = 0; r < 10; ++r) {
    __m256i hi0, lo0, hi1, lo1;
    mulhilo8(x, m0, hi0, lo0);
    mulhilo8(z, m1, hi1, lo1);
    const __m256i key0 = _mm256_set1_epi32(static_cast<int>(k0));
    const __m256i key1 = _mm256_set1_epi32(static_cast<int>(k1));
    x = _mm256_xor_si256(_mm256_xor_si256(hi1, y), key0);
    y = lo1;
    z = _mm256_xor_si256(_mm256_xor_si256(hi0, w), key1);
    w = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

}  // namespace dbp
#endif
