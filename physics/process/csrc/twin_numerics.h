// Numerics shared by the process core's native kernels (serial_draws.cc, general_chunk.cc):
// the distribution families' codes, dists.log, dists.exp and dists.normal_ppf, operation for
// operation as XLA:CPU computes them (std::fma where its code generator contracts a multiply
// feeding an add; the kernels are compiled with -ffp-contract=off).

#ifndef TWIN_NUMERICS_H_
#define TWIN_NUMERICS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace twin {

enum DrawKind : int32_t {
  kDeterministic = 0,
  kExponential = 1,
  kLognormal = 2,
  kUniform = 3,
  kGamma = 4,
  kEmpirical = 5
};

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr double kSmallestNormal = 2.2250738585072014e-308;

inline double bits_to_double(uint64_t b) {
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
}

inline uint64_t double_to_bits(double d) {
  uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

// dists._mix64 and dists._unit_from_bits: number `index` of the stream that starts at `seed`.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// dists._unit_from_bits: a uniform on [0, 1) from the top 52 bits of a 64-bit word.
inline double unit_from_bits(uint64_t bits) {
  return bits_to_double((bits >> 12) | 0x3FF0000000000000ull) - 1.0;
}

inline double uniform_at(uint64_t seed, uint64_t index) {
  return unit_from_bits(mix64(seed + (index + 1) * kGolden));
}

inline double clip(double x, double lo, double hi) { return std::min(std::max(x, lo), hi); }

// dists.log (fdlibm's e_log.c). XLA:CPU flushes subnormal inputs to zero.
constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
constexpr double kLg[7] = {6.666666666666735130e-01, 3.999999999940941908e-01,
                           2.857142874366239149e-01, 2.222219843214978396e-01,
                           1.818357216161805012e-01, 1.531383769920937332e-01,
                           1.479819860511658591e-01};

inline double log_(double x) {
  if (std::fabs(x) < kSmallestNormal) x = 0.0;
  const uint64_t bits = double_to_bits(x);
  const uint32_t hx = static_cast<uint32_t>(bits >> 32);
  const uint32_t i = ((hx & 0x000FFFFFu) + 0x95F64u) & 0x100000u;
  const int32_t k = static_cast<int32_t>(hx >> 20) - 1023 + static_cast<int32_t>(i >> 20);
  const uint32_t hi = (hx & 0x000FFFFFu) | (i ^ 0x3FF00000u);
  const double m = bits_to_double((static_cast<uint64_t>(hi) << 32) | (bits & 0xFFFFFFFFull));
  const double f = m - 1.0, s = f / (2.0 + f), z = s * s, w = z * z;
  const double t1 = std::fma(w, std::fma(w, std::fma(w, kLg[6], kLg[4]), kLg[2]), kLg[0]);
  const double t2 = std::fma(w, std::fma(w, kLg[5], kLg[3]), kLg[1]);
  const double r = std::fma(w, t2, z * t1);
  const double hfsq = 0.5 * f * f, dk = static_cast<double>(k);
  const double g = std::fma(dk, kLn2Lo, s * (hfsq + r));
  double out = std::fma(dk, kLn2Hi, -((hfsq - g) - f));
  out = x == 0.0 ? -INFINITY : out;
  out = x == INFINITY ? INFINITY : out;
  out = x < 0.0 ? NAN : out;
  return std::isnan(x) ? x : out;
}

// dists.exp (fdlibm's e_exp.c, 2^k applied as two exact powers of two).
constexpr double kExpP[5] = {1.66666666666666019037e-01, -2.77777777770155933842e-03,
                             6.61375632143793436117e-05, -1.65339022054652515390e-06,
                             4.13813679705723846039e-08};

inline double exp_(double x) {
  double k = std::trunc(std::fma(x, 1.44269504088896338700e00, x < 0.0 ? -0.5 : 0.5));
  k = clip(k, -1100.0, 1100.0);
  const double hi = std::fma(-k, kLn2Hi, x), lo = k * kLn2Lo;
  const double r = hi - lo, t = r * r;
  const double p = std::fma(
      std::fma(std::fma(std::fma(kExpP[4], t, kExpP[3]), t, kExpP[2]), t, kExpP[1]), t, kExpP[0]);
  const double c = std::fma(-t, p, r);
  const double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
  const int64_t ki = static_cast<int64_t>(k), half = ki >> 1;
  double out = y * bits_to_double(static_cast<uint64_t>(half + 1023) << 52) *
               bits_to_double(static_cast<uint64_t>(ki - half + 1023) << 52);
  out = std::fabs(out) < kSmallestNormal ? 0.0 : out;  // XLA:CPU flushes subnormals
  out = x > 7.09782712893383973096e02 ? INFINITY : out;
  out = x < -7.45133219101941108420e02 ? 0.0 : out;
  return std::isnan(x) ? x : out;
}

// dists.normal_ppf (Wichura's AS 241), numerators then denominators, highest power first.
constexpr double kCentral[2][8] = {
    {2.5090809287301226727e3, 3.3430575583588128105e4, 6.7265770927008700853e4,
     4.5921953931549871457e4, 1.3731693765509461125e4, 1.9715909503065514427e3,
     1.3314166789178437745e2, 3.3871328727963666080e0},
    {5.2264952788528545610e3, 2.8729085735721942674e4, 3.9307895800092710610e4,
     2.1213794301586595867e4, 5.3941960214247511077e3, 6.8718700749205790830e2,
     4.2313330701600911252e1, 1.0}};
constexpr double kNear[2][8] = {
    {7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
     1.27045825245236838258e0, 3.64784832476320460504e0, 5.76949722146069140550e0,
     4.63033784615654529590e0, 1.42343711074968357734e0},
    {1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
     1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e0,
     2.05319162663775882187e0, 1.0}};
constexpr double kFar[2][8] = {
    {2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
     2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e0,
     5.46378491116411436990e0, 6.65790464350110377720e0},
    {2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
     7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
     5.99832206555887937690e-1, 1.0}};

inline double horner(const double* c, double x) {
  double out = c[0];
  for (int i = 1; i < 8; ++i) out = std::fma(out, x, c[i]);
  return out;
}

inline double ppf_central(double q) {
  const double r = std::fma(-q, q, 0.180625);
  return q * horner(kCentral[0], r) / horner(kCentral[1], r);
}

inline double ppf_tail(double p, double q) {
  double t = std::sqrt(-log_(std::min(p, 1.0 - p)));
  const bool near = t <= 5.0;
  t = near ? t - 1.6 : t - 5.0;
  // the coefficients chosen first, then one rational function (as dists.normal_ppf selects)
  double num = near ? kNear[0][0] : kFar[0][0], den = near ? kNear[1][0] : kFar[1][0];
  for (int i = 1; i < 8; ++i) {
    num = std::fma(num, t, near ? kNear[0][i] : kFar[0][i]);
    den = std::fma(den, t, near ? kNear[1][i] : kFar[1][i]);
  }
  const double tail = num / den;
  return q < 0.0 ? -tail : tail;
}

inline double normal_ppf(double p) {
  const double q = p - 0.5;
  return std::fabs(q) <= 0.425 ? ppf_central(q) : ppf_tail(p, q);
}

// dists.gamma's proposal from its standard normal x = normal_ppf(clip(u0, 1e-300, 1)) and its
// second uniform u1: d (1 + c x)^3 and whether Marsaglia and Tsang's test accepts it.
inline double propose_from(double x, double u1, double d, double c, char* ok) {
  const double y = std::fma(c, x, 1.0);
  const double v = y * (y * y);
  const double rhs = std::fma(d, log_(v > 0 ? v : 1.0), std::fma(-d, v, std::fma(0.5 * x, x, d)));
  *ok = (v > 0) & (log_(u1) < rhs);  // both evaluated: no branch in the lane loop
  return d * v;
}

inline double propose(double u0, double u1, double d, double c, char* ok) {
  return propose_from(normal_ppf(clip(u0, 1e-300, 1.0)), u1, d, c, ok);
}

// model.lt_bins of one lead time x on the histogram's edges (bins + 1 of them, log-spaced,
// per_decade bins a decade from 1e-2): the bin read off the logarithm, then checked against the
// two edges around it (so exact, whatever the logarithm's last bit); NaN (none) gets bin 0.
inline int32_t lead_bin(double x, const double* edges, int64_t bins, double per_decade) {
  constexpr double kInvLn10 = 0.43429448190325176;  // model._INV_LN10 (1 / log(10))
  double guess = std::floor(std::fma(log_(x), kInvLn10, 2.0) * per_decade);
  guess = std::isnan(guess) ? 0.0 : clip(guess, 0.0, static_cast<double>(bins - 1));
  int32_t b = static_cast<int32_t>(guess);
  b = x <= edges[b] ? b - 1 : (x > edges[b + 1] ? b + 1 : b);
  return std::min(std::max(b, 0), static_cast<int32_t>(bins - 1));
}

}  // namespace twin

#endif  // TWIN_NUMERICS_H_
