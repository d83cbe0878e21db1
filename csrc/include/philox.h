// Counter-based Gaussian noise: Philox4x32-10 + Box-Muller, shared by the CPU
// and CUDA kernels so one address gives one float on every device.
//
// Address -> value (docs/design.md, "Noise addressing"; docs/science.md, "Addressed noise"):
//   key     = seed (64 bits)
//   counter = (element / 4, uid, step, stream), each taken modulo 2^32
//   lane    = element % 4 picks one of the four normals of that counter.
// Constants are float32 values written as hex literals (no decimal rounding
// ambiguity). Only IEEE-exact operations (+, -, *, /, sqrt, floor, integer ops) are used,
// and the build disables FMA contraction, so the CPU, CUDA and pure-PyTorch
// reference (dbp_core/ops/reference.py) produce bit-identical float32 values.
#pragma once
#include <cstdint>
#include <math.h>

#include <type_traits>

#if defined(__CUDACC__)
#define DBP_HD __host__ __device__ __forceinline__
#else
#define DBP_HD inline
#endif

namespace dbp {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1

struct U4 {
  uint32_t x, y, z, w;
};

DBP_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds (Salmon et al., SC'11, "Random123").
DBP_HD U4 philox4x32_10(U4 c, uint32_t k0, uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kPhiloxM0, c.x, hi0, lo0);
    mulhilo(kPhiloxM1, c.z, hi1, lo1);
    c = U4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return c;
}

// The bits of a float as a 32-bit word, or a word's bits as a float (std::bit_cast, with the
// CUDA intrinsics in device code).
template <typename To, typename From>
DBP_HD To bit_cast(From v) {
  static_assert(sizeof(To) == 4 && sizeof(From) == 4, "bit_cast: 32-bit float <-> uint32_t only");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<To, float>) {
    return __uint_as_float(v);
  } else {
    return __float_as_uint(v);
  }
#else
  To out;
  __builtin_memcpy(&out, &v, sizeof out);
  return out;
#endif
}

// Natural log on (0, 1] from IEEE-exact operations only: u = m * 2^e with
// m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1).
// |s| <= 0.172, so the odd series to s^9 is accurate to float rounding.
DBP_HD float log_unit(float u) {
  const uint32_t b = bit_cast<uint32_t>(u);
  const uint32_t mb = (b & 0x007fffffu) | 0x3f800000u;  // mantissa as a float in [1, 2)
  // m > sqrt(2): halve m (exponent field - 1) and add one to e. Integer
  // selects keep the loop branch-free, so the compiler vectorises it.
  const uint32_t big = mb > bit_cast<uint32_t>(0x1.6a09e6p+0f) ? 1u : 0u;
  const float m = bit_cast<float>(mb - (big << 23));
  const float e = static_cast<float>(static_cast<int32_t>((b >> 23) & 0xffu) - 127 + static_cast<int32_t>(big));
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  const float p = 2.0f + s2 * (0x1.555556p-1f + s2 * (0x1.99999ap-2f + s2 * (0x1.24924ap-2f + s2 * 0x1.c71c72p-3f)));
  return e * 0x1.62e430p-1f + s * p;
}

// sin and cos of 2*pi*v for v in [0, 1): exact quadrant reduction, then
// Taylor polynomials on [-pi/4, pi/4].
DBP_HD void sincos_2pi(float v, float& s_out, float& c_out) {
  const float x = v * 4.0f;                    // exact
  // nearest quadrant 0..4; x + 0.5 >= 0, so truncation is floor (and vectorises)
  const float q = static_cast<float>(static_cast<int32_t>(x + 0.5f));
  const float a = (x - q) * 0x1.921fb6p+0f;       // [-pi/4, pi/4]
  const float a2 = a * a;
  const float s = a * (1.0f + a2 * (-0x1.555556p-3f + a2 * (0x1.111112p-7f + a2 * (-0x1.a01a02p-13f + a2 * 0x1.71de3ap-19f))));
  const float c = 1.0f + a2 * (-0.5f + a2 * (0x1.555556p-5f + a2 * (-0x1.6c16c2p-10f + a2 * (0x1.a01a02p-16f + a2 * -0x1.27e4fcp-22f))));
  // rotate (s, c) by qi quarter turns: q0 (s, c), q1 (c, -s), q2 (-s, -c),
  // q3 (-c, s); done on the bits (swap by mask, negate by the sign bit).
  const uint32_t qi = static_cast<uint32_t>(static_cast<int32_t>(q)) & 3u;
  const uint32_t swap = 0u - (qi & 1u);
  const uint32_t sb = bit_cast<uint32_t>(s), cb = bit_cast<uint32_t>(c);
  const float sv = bit_cast<float>(((sb & ~swap) | (cb & swap)) ^ ((qi & 2u) << 30));
  const float cv = bit_cast<float>(((cb & ~swap) | (sb & swap)) ^ (((qi + 1u) & 2u) << 30));
  s_out = sv;
  c_out = cv;
}

// Box-Muller on two 32-bit words: u1 in (0, 1] (never 0), v in [0, 1),
// 24 bits each. Tails are cut at sqrt(-2 log 2^-24) = 5.77 sigma.
DBP_HD void box_muller(uint32_t a, uint32_t b, float& z0, float& z1) {
  const float u1 = static_cast<float>(static_cast<int32_t>(16777216u - (a >> 8))) * 0x1.000000p-24f;  // 2^-24
  const float v = static_cast<float>(static_cast<int32_t>(b >> 8)) * 0x1.000000p-24f;
  const float r = sqrtf(-2.0f * log_unit(u1));
  float s, c;
  sincos_2pi(v, s, c);
  z0 = r * c;
  z1 = r * s;
}

// The Philox counter and key of an address (the layout documented at the top).
DBP_HD U4 noise_counter(uint64_t block, uint64_t uid, uint64_t step, uint64_t stream) {
  return U4{static_cast<uint32_t>(block), static_cast<uint32_t>(uid), static_cast<uint32_t>(step),
            static_cast<uint32_t>(stream)};
}

DBP_HD U4 noise_bits(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step, uint64_t block) {
  return philox4x32_10(noise_counter(block, uid, step, stream), static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

// The four standard normals at counter block `block` of address
// (seed, stream, uid, step): elements 4*block .. 4*block+3 of that sample.
DBP_HD void normal4(uint64_t seed, uint64_t stream, uint64_t uid, uint64_t step, uint64_t block,
                    float out[4]) {
  const U4 r = noise_bits(seed, stream, uid, step, block);
  box_muller(r.x, r.y, out[0], out[1]);
  box_muller(r.z, r.w, out[2], out[3]);
}

}  // namespace dbp
