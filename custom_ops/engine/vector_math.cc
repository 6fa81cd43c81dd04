#include "custom_ops/engine/vector_math.h"

#include <cstdint>
#include <cstring>

// Each kernel is compiled twice, for AVX2 and for the x86-64 baseline, and
// the loader picks one for the CPU (GCC/Clang function multiversioning), so
// the library still runs on any CPU TensorFlow does. The loops vectorise
// because the build uses -O3 -fno-trapping-math (the latter lets the clamps
// in Exp become vector min/max). Defining TF_GENREC_VECTORIZED empty builds
// the baseline only (the tests check both).
#ifndef TF_GENREC_VECTORIZED
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TF_GENREC_VECTORIZED __attribute__((target_clones("avx2", "default")))
#else
#define TF_GENREC_VECTORIZED
#endif
#endif

namespace tf_genrec {
namespace {

// Independent partial sums: a fixed order (the same bits for the same row)
// that the compiler can keep in vector registers, where one accumulator is
// a serial chain it may not reorder.
constexpr int kLanes = 16;

// x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so r is exact enough),
// exp(r) by the Cephes expf polynomial, 2^n built in the exponent bits.
// Rounding x log2(e) to n by adding 1.5 * 2^23 (exact for |n| < 2^22) leaves
// n in the sum's low mantissa bits and avoids nearbyint, which the baseline
// (SSE2) cannot vectorise.
inline float ExpInline(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;
  constexpr int32_t kRoundBits = 0x4B400000;  // the bits of kRound
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float shifted = x * kLog2e + kRound;
  const float n = shifted - kRound;
  int32_t n_bits;
  std::memcpy(&n_bits, &shifted, sizeof(n_bits));
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t scale_bits = (n_bits - kRoundBits + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(scale));
  return p * scale;
}

// sum(f(x[i])) over x[0, n) in kLanes partial sums.
template <typename F>
inline float SumOf(const float* x, int n, F f) {
  float acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += f(x[i + l]);
  }
  for (; i < n; ++i) acc[i % kLanes] += f(x[i]);
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

}  // namespace

float Exp(float x) { return ExpInline(x); }

TF_GENREC_VECTORIZED
float SumOfSquares(const float* x, int n) {
  return SumOf(x, n, [](float v) { return v * v; });
}

TF_GENREC_VECTORIZED
float ExpShifted(float* x, int n, float shift) {
  for (int i = 0; i < n; ++i) x[i] = ExpInline(x[i] - shift);
  return SumOf(x, n, [](float v) { return v; });
}

TF_GENREC_VECTORIZED
float Max(const float* x, int n, float init) {
  float acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = init;
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      acc[l] = acc[l] < x[i + l] ? x[i + l] : acc[l];
    }
  }
  for (; i < n; ++i) acc[0] = acc[0] < x[i] ? x[i] : acc[0];
  float m = acc[0];
  for (int l = 1; l < kLanes; ++l) m = m < acc[l] ? acc[l] : m;
  return m;
}

TF_GENREC_VECTORIZED
void SiluMul(const float* gate, const float* up, int n, float* out) {
  for (int i = 0; i < n; ++i) {
    out[i] = gate[i] / (1.0f + ExpInline(-gate[i])) * up[i];
  }
}

TF_GENREC_VECTORIZED
void Rope(float* heads_row, int heads, int head_dim, const float* cos,
          const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    float* v = heads_row + h * head_dim;
    for (int i = 0; i < half; ++i) {
      const float x1 = v[i], x2 = v[i + half];
      v[i] = x1 * cos[i] - x2 * sin[i];
      v[i + half] = x2 * cos[i] + x1 * sin[i];
    }
  }
}

}  // namespace tf_genrec
