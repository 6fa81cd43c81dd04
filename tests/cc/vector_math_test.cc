// Checks the engine's element-wise kernels (custom_ops/engine/vector_math.h)
// against double-precision references; exits non-zero on the first failure.
#include "custom_ops/engine/vector_math.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

void Check(bool ok, const char* what, double got, double want) {
  if (ok) return;
  std::fprintf(stderr, "FAIL %s: got %.9g, want %.9g\n", what, got, want);
  std::exit(1);
}

double RelErr(double got, double want) {
  return std::fabs(got - want) / std::max(std::fabs(want), 1e-30);
}

}  // namespace

int main() {
  using namespace tf_genrec;
  // Exp over its whole range, every 97th float, and its clamps.
  double worst = 0.0;
  for (float x = -87.0f; x <= 88.0f;) {
    worst = std::max(worst, RelErr(Exp(x), std::exp(static_cast<double>(x))));
    for (int i = 0; i < 97; ++i) x = std::nextafter(x, 100.0f);
  }
  Check(worst < 2e-7, "Exp max relative error", worst, 2e-7);
  Check(Exp(-1e30f) == Exp(-87.0f), "Exp clamps below", Exp(-1e30f),
        Exp(-87.0f));
  Check(Exp(1e30f) == Exp(88.0f), "Exp clamps above", Exp(1e30f), Exp(88.0f));
  Check(Exp(0.0f) == 1.0f, "Exp(0)", Exp(0.0f), 1.0);

  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int n : {0, 1, 7, 16, 17, 255, 256, 1000}) {
    std::vector<float> x(n), y(n);
    for (auto& v : x) v = normal(rng);
    for (auto& v : y) v = normal(rng);
    double squares = 0.0, max = -1e30, exp_sum = 0.0;
    for (float v : x) {
      squares += static_cast<double>(v) * v;
      max = std::max<double>(max, v);
      exp_sum += std::exp(static_cast<double>(v) - 1.5);
    }
    Check(RelErr(SumOfSquares(x.data(), n), squares) < 1e-5, "SumOfSquares",
          SumOfSquares(x.data(), n), squares);
    Check(Max(x.data(), n, -1e30f) == static_cast<float>(max), "Max",
          Max(x.data(), n, -1e30f), max);
    Check(Max(x.data(), n, 1e30f) == 1e30f, "Max keeps init", 0, 1e30);
    std::vector<float> out(n);
    SiluMul(x.data(), y.data(), n, out.data());
    for (int i = 0; i < n; ++i) {
      const double g = x[i], want = g / (1.0 + std::exp(-g)) * y[i];
      Check(std::fabs(out[i] - want) < 1e-5 * (1.0 + std::fabs(want)),
            "SiluMul", out[i], want);
    }
    std::vector<float> e = x;
    const float sum = ExpShifted(e.data(), n, 1.5f);
    Check(RelErr(sum, exp_sum) < 1e-5 || n == 0, "ExpShifted sum", sum,
          exp_sum);
    for (int i = 0; i < n; ++i) {
      // The shift is subtracted in float, as the kernel does.
      const double want = std::exp(static_cast<double>(x[i] - 1.5f));
      Check(RelErr(e[i], want) < 2e-7, "ExpShifted", e[i], want);
    }
  }

  // RoPE: 3 heads of 8, against the rotate_half formula in double.
  const int heads = 3, dim = 8, half = dim / 2;
  std::vector<float> row(heads * dim), cos(half), sin(half);
  for (auto& v : row) v = normal(rng);
  for (int i = 0; i < half; ++i) {
    cos[i] = std::cos(0.3f * (i + 1));
    sin[i] = std::sin(0.3f * (i + 1));
  }
  std::vector<float> rotated = row;
  Rope(rotated.data(), heads, dim, cos.data(), sin.data());
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < dim; ++i) {
      const int j = i < half ? i + half : i - half;
      const double sign = i < half ? -1.0 : 1.0;
      const double want =
          static_cast<double>(row[h * dim + i]) * cos[i % half] +
          sign * row[h * dim + j] * sin[i % half];
      Check(std::fabs(rotated[h * dim + i] - want) < 1e-5, "Rope",
            rotated[h * dim + i], want);
    }
  }
  std::printf("vector_math ok (Exp max relative error %.3g)\n", worst);
  return 0;
}
