#ifndef TF_GENREC_CUSTOM_OPS_ENGINE_VECTOR_MATH_H_
#define TF_GENREC_CUSTOM_OPS_ENGINE_VECTOR_MATH_H_

// The CPU engine's element-wise kernels (everything between its matrix
// products), vectorised: built for AVX2 and for the baseline, chosen when
// the library loads. Each result depends on its own row's values only, never
// on the call's row count, so answers stay batch-invariant.

namespace tf_genrec {

// exp(x) with relative error below 1e-7 for x in [-87, 88]; inputs outside
// are clamped to it (softmax and SiLU arguments need no more).
float Exp(float x);

// sum(x[i]^2) over x[0, n), in a fixed order.
float SumOfSquares(const float* x, int n);

// x[i] = exp(x[i] - shift) over x[0, n); returns their sum, in a fixed order.
float ExpShifted(float* x, int n, float shift);

// The larger of init and max(x[0, n)).
float Max(const float* x, int n, float init);

// out[i] = silu(gate[i]) * up[i] over [0, n).
void SiluMul(const float* gate, const float* up, int n, float* out);

// HF rotate_half RoPE, in place, on `heads` heads of head_dim values each,
// with the position's cos and sin of each of the head_dim / 2 frequencies.
void Rope(float* heads_row, int heads, int head_dim, const float* cos,
          const float* sin);

}  // namespace tf_genrec

#endif  // TF_GENREC_CUSTOM_OPS_ENGINE_VECTOR_MATH_H_
