// The serial fast path's random draws and bookkeeping for one chunk of parts, as XLA FFI
// handlers for the CPU (physics/process/native.py builds them with serial_chunk.cc into one
// library and registers them):
//   TwinSerialDraws      every station's processing times (serial._samples);
//   TwinSerialDowntime   one failing station's busy times, failures, repairs by part and
//                        failure clock (serial._downtime and serial._repairs_by_part);
//   TwinLeadHistogram    the lead times' histogram (model.add_lead_times).
//
// They compute exactly what the XLA versions compute, bit for bit: the same generator
// (dists.uniform_lanes and dists.uniform_at: SplitMix64 at each number), the same algorithms
// (dists.log, dists.exp, dists.normal_ppf, dists.gamma's Marsaglia-Tsang sampler with its
// numbered retries) and the same roundings. Compiled with -ffp-contract=off, they fuse
// multiply-adds (std::fma) exactly where XLA:CPU's code generator does (LLVM contracts a
// multiply feeding an add); those places were found by comparing millions of draws, and
// tests/test_process_native.py compares every family on random lanes.
//
// TwinSerialDraws' layout: lanes last (V lanes, K stations, n parts).
//   args: seed (V) u64 (the lanes' SplitMix64 starting points, dists.stream_seed of their k_u
//         keys), j (V) s32 (the chunk's first part), kind (K) s32 (DrawKind), a, b (K, V) f64
//         (per family: deterministic mean; exponential mean; lognormal mu, sigma of the log;
//         uniform low, high - low; gamma mean, cv), gseed (K, 3, V) u64 (a gamma station's
//         first, retry and boost streams), gpar (K, 4, V) f64 (gamma d, c, 1/shape, boost 0/1),
//         values (K, V, m) f64 and nvalues (K, V) s32 (empirical).
//   rets: times (K, n, V) f64.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

#include "twin_numerics.h"

namespace ffi = xla::ffi;

namespace {

using namespace twin;  // NOLINT: the shared numerics

// Room for normal_ppf_row: the indices and quantiles of a row's tail lanes.
struct TailScratch {
  std::vector<int64_t> index;
  std::vector<double> p, z;
  explicit TailScratch(int64_t V) : index(V), p(V), z(V) {}
};

__attribute__((noinline)) void ppf_central_row(const double* __restrict p, double* __restrict z,
                                               int64_t V) {
  for (int64_t v = 0; v < V; ++v) z[v] = ppf_central(p[v] - 0.5);
}

__attribute__((noinline)) void ppf_tail_row(const double* __restrict p, double* __restrict z,
                                            int64_t n) {
  for (int64_t i = 0; i < n; ++i) z[i] = ppf_tail(p[i], p[i] - 0.5);
}

// normal_ppf of every lane's p: the central rational function for all (vectorized), then the
// tail's logarithm and rational function only for the lanes past |p - 1/2| > 0.425 (about 15%
// of uniforms), gathered into a dense array so that their loop is vectorized too. The same
// numbers as normal_ppf lane by lane.
void normal_ppf_row(const double* p, double* z, TailScratch& scratch, int64_t V) {
  ppf_central_row(p, z, V);
  int64_t n = 0;
  for (int64_t v = 0; v < V; ++v) {
    if (!(std::fabs(p[v] - 0.5) <= 0.425)) {
      scratch.index[n] = v;
      scratch.p[n++] = p[v];
    }
  }
  ppf_tail_row(scratch.p.data(), scratch.z.data(), n);
  for (int64_t i = 0; i < n; ++i) z[scratch.index[i]] = scratch.z[i];
}

// The number of part row r of a chunk that starts at the lane's part j.
inline uint64_t part_number(int32_t j, int64_t r) {
  return static_cast<uint64_t>(static_cast<int64_t>(j)) + r;
}

// Station k's uniform for that part (dists.uniform_lanes: number part * K + k of the lane's
// stream), clipped as dists.sample clips it.
inline double part_uniform(uint64_t seed, int32_t j, int64_t r, int64_t k, int64_t K) {
  return clip(uniform_at(seed, part_number(j, r) * K + k), 1e-12, 1.0 - 1e-12);
}

// One station's times for part row r of the chunk, every lane (dists.sample on the clipped
// uniforms of dists.uniform_lanes). A function of its own with restrict-qualified arguments,
// so that the compiler vectorizes the lane loop.
template <int kKind>
__attribute__((noinline)) void station_row(const uint64_t* __restrict seed,
                                           const int32_t* __restrict j, int64_t r, int64_t k,
                                           int64_t K, const double* __restrict a,
                                           const double* __restrict b, double* __restrict out,
                                           int64_t V) {
  for (int64_t v = 0; v < V; ++v) {
    const double u = part_uniform(seed[v], j[v], r, k, K);
    double x;
    if constexpr (kKind == kExponential) {
      x = a[v] * -log_(1.0 - u);
    } else if constexpr (kKind == kLognormal) {
      x = u;  // the quantile next (normal_ppf_row), then lognormal_row
    } else {
      x = std::fma(b[v], u, a[v]);  // uniform
    }
    out[v] = x;
  }
}

// A lognormal time from its standard normal quantile z: exp(mu + sigma z).
__attribute__((noinline)) void lognormal_row(const double* __restrict z,
                                             const double* __restrict mu,
                                             const double* __restrict sigma,
                                             double* __restrict out, int64_t V) {
  for (int64_t v = 0; v < V; ++v) out[v] = exp_(std::fma(sigma[v], z[v], mu[v]));
}

constexpr int64_t kGroup = 16;  // dists.GAMMA_GROUP

// dists.gamma with ``start``, the first proposal of part row r in every lane: variate j + r
// from uniforms 2 (j + r) and 2 (j + r) + 1 of the lane's first stream (s0). First the
// uniforms (p, the clipped first, and u1), then the quantiles (normal_ppf_row), then
// gamma_first_finish.
__attribute__((noinline)) void gamma_first_uniforms(const uint64_t* __restrict s0,
                                                    const int32_t* __restrict j, int64_t r,
                                                    double* __restrict p, double* __restrict u1,
                                                    int64_t V) {
  for (int64_t v = 0; v < V; ++v) {
    const uint64_t at = part_number(j[v], r);
    p[v] = clip(uniform_at(s0[v], 2 * at), 1e-300, 1.0);
    u1[v] = uniform_at(s0[v], 2 * at + 1);
  }
}

__attribute__((noinline)) void gamma_first_finish(const double* __restrict x,
                                                  const double* __restrict u1,
                                                  const double* __restrict d,
                                                  const double* __restrict c,
                                                  double* __restrict out, char* __restrict ok,
                                                  int64_t V) {
  for (int64_t v = 0; v < V; ++v) out[v] = propose_from(x[v], u1[v], d[v], c[v], &ok[v]);
}

// The boost for shapes below 1 (``Gamma(a) = Gamma(a + 1) U^(1/a)``, U from the lane's third
// stream s2 at the variate's number) and the scale (mean cv^2, as dists.sample multiplies).
template <bool kBoost>
__attribute__((noinline)) void gamma_finish(const uint64_t* __restrict s2,
                                            const int32_t* __restrict j, int64_t r,
                                            const double* __restrict inv_shape,
                                            const double* __restrict boost,
                                            const double* __restrict mean,
                                            const double* __restrict cv, double* __restrict out,
                                            int64_t V) {
  for (int64_t v = 0; v < V; ++v) {
    double x = out[v];
    if constexpr (kBoost) {
      const uint64_t at = part_number(j[v], r);
      const double boosted = x * exp_(log_(1.0 - uniform_at(s2[v], at)) * inv_shape[v]);
      x = boost[v] != 0.0 ? boosted : x;
    }
    out[v] = x * mean[v] * cv[v] * cv[v];
  }
}

// dists._retry_by_group for one lane's column (stride V): a group's k-th rejected variate takes
// the k-th accepted proposal of the group's numbered retry rounds (uniforms (i << 40) + 2 g and
// + 1 of the lane's second stream s1 in round i), which is what the rounds one at a time give.
void gamma_retries(uint64_t s1, int64_t j, double d, double c, double* out, char* ok, int64_t n,
                   int64_t V) {
  for (int64_t g = 0; g < n / kGroup; ++g) {
    const uint64_t number = static_cast<uint64_t>(j / kGroup + g);
    uint64_t round = 0;
    for (int64_t r = g * kGroup; r < (g + 1) * kGroup; ++r) {
      while (!ok[r * V]) {
        const uint64_t at = (round << 40) + 2 * number;
        out[r * V] = propose(uniform_at(s1, at), uniform_at(s1, at + 1), d, c, &ok[r * V]);
        ++round;
      }
    }
  }
}

// Failure f of a station's stream: the busy time since the last failure (rounded on its own,
// as serial._repairs_by_part's maximum makes XLA round it) and the repair time.
inline void failure_draw(uint64_t seed, uint64_t f, double mtbf, double mttr, double* gap,
                         double* repair) {
  *gap = std::max(mtbf * -log_(1.0 - uniform_at(seed, 2 * f)), 0.0);
  *repair = mttr * -log_(1.0 - uniform_at(seed, 2 * f + 1));
}

// Failure count + t of every lane.
__attribute__((noinline)) void failure_row(const uint64_t* __restrict seed,
                                           const int32_t* __restrict count, int64_t t,
                                           const double* __restrict mtbf,
                                           const double* __restrict mttr, double* __restrict gap,
                                           double* __restrict repair, int64_t V) {
  for (int64_t v = 0; v < V; ++v) {
    const uint64_t f = static_cast<uint64_t>(static_cast<int64_t>(count[v]) + t);
    failure_draw(seed[v], f, mtbf[v], mttr[v], &gap[v], &repair[v]);
  }
}

// serial._downtime for one failing station (operation mode): its busy time at the end of each
// part (serial._running_sum's order: sums within blocks of 16 parts, the blocks' totals carried
// along), its failure epochs in busy time (failure f: gap mtbf * -log(1 - U(2f)) after the last,
// repair mttr * -log(1 - U(2f + 1)), U the station's stream), drawn m at a time as
// serial._repairs_by_part draws them until one falls past the chunk, each failure's repair given
// to the first part that ends at or after it (summed per part and block of m, the blocks' sums
// then added, as XLA's scatter into zeros and its carry do), and the failure clock after the chunk.
ffi::Error SerialDowntime(ffi::Buffer<ffi::F64> proc_b, ffi::Buffer<ffi::U64> seed_b,
                          ffi::Buffer<ffi::F64> mtbf_b, ffi::Buffer<ffi::F64> mttr_b,
                          ffi::Buffer<ffi::F64> since_b, ffi::Buffer<ffi::S32> count_b,
                          ffi::Buffer<ffi::S32> block_b, ffi::ResultBuffer<ffi::F64> rep_o,
                          ffi::ResultBuffer<ffi::F64> since_o,
                          ffi::ResultBuffer<ffi::S32> count_o) {
  const auto dims = proc_b.dimensions();
  const int64_t V = seed_b.element_count();
  if (dims.size() != 2 || dims[1] != V || dims[0] % kGroup || block_b.element_count() != 1 ||
      block_b.typed_data()[0] < 1) {
    return ffi::Error::InvalidArgument("twin_serial_downtime: proc (n, V), n whole groups of 16");
  }
  const int64_t n = dims[0], m = block_b.typed_data()[0];
  const double* proc = proc_b.typed_data();
  double* rep = rep_o->typed_data();
  std::vector<double> busy(n * V), within(V), offset(V, 0.0);
  for (int64_t b = 0; b < n / kGroup; ++b) {  // serial._running_sum
    for (int64_t i = 0; i < kGroup; ++i) {
      const double* x = proc + (b * kGroup + i) * V;
      double* out = busy.data() + (b * kGroup + i) * V;
      for (int64_t v = 0; v < V; ++v) {
        within[v] = i ? within[v] + x[v] : x[v];
        out[v] = within[v] + offset[v];
      }
    }
    for (int64_t v = 0; v < V; ++v) offset[v] = offset[v] + within[v];
  }
  // Each lane's failures in the chunk, block by block, until a block ends past the chunk (a
  // short scalar loop per lane): epochs, repairs and block numbers, lane after lane.
  // The first block's gaps and repairs, every lane at once (vectorized), then each lane's
  // epochs and any further blocks (rare: a short scalar loop), lane after lane.
  const uint64_t* seed = seed_b.typed_data();
  const double* mtbf = mtbf_b.typed_data();
  const double* mttr = mttr_b.typed_data();
  const int32_t* count = count_b.typed_data();
  std::vector<double> gap0(m * V), repair0(m * V);
  for (int64_t t = 0; t < m; ++t) {
    failure_row(seed, count, t, mtbf, mttr, gap0.data() + t * V, repair0.data() + t * V, V);
  }
  std::vector<double> epoch, repair;
  std::vector<int64_t> block, first_of(V + 1);
  epoch.reserve(m * V);
  repair.reserve(m * V);
  block.reserve(m * V);
  for (int64_t v = 0; v < V; ++v) {
    first_of[v] = static_cast<int64_t>(epoch.size());
    const double since = since_b.typed_data()[v], end = busy[(n - 1) * V + v];
    double e = -since, last_in = -INFINITY;
    int32_t inside = 0;
    for (int64_t b = 0; e <= end || b == 0; ++b) {
      for (int64_t t = 0; t < m; ++t) {
        double gap = 0.0, rp = 0.0;
        if (b == 0) {
          gap = gap0[t * V + v];
          rp = repair0[t * V + v];
        } else {
          const uint64_t f = static_cast<uint64_t>(count[v] + b * m + t);
          failure_draw(seed[v], f, mtbf[v], mttr[v], &gap, &rp);
        }
        e = e + gap;
        epoch.push_back(e);
        repair.push_back(rp);
        block.push_back(b);
        if (e <= end) {
          ++inside;
          last_in = std::max(last_in, e);
        }
      }
    }
    since_o->typed_data()[v] = inside > 0 ? end - last_in : since + end;
    count_o->typed_data()[v] = count[v] + inside;
  }
  first_of[V] = static_cast<int64_t>(epoch.size());
  // Each failure to the first part that ends at or after it, the parts in order and the lanes
  // inside (the busy times read row by row): a part's repairs summed from zero within a block,
  // the blocks' sums then added in order.
  std::memset(rep, 0, sizeof(double) * n * V);
  std::vector<int64_t> next(first_of.begin(), first_of.end() - 1);
  std::vector<double> due(V);  // each lane's next failure not yet placed (inf: none)
  for (int64_t v = 0; v < V; ++v) due[v] = next[v] < first_of[v + 1] ? epoch[next[v]] : INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    const double* b = busy.data() + i * V;
    for (int64_t v = 0; v < V; ++v) {
      if (!(due[v] <= b[v])) continue;  // (dense arrays: no gather for the common miss)
      int64_t f = next[v];
      const int64_t last = first_of[v + 1];
      double total = 0.0;
      while (f < last && epoch[f] <= b[v]) {
        double sum = 0.0;
        const int64_t blk = block[f];
        for (; f < last && epoch[f] <= b[v] && block[f] == blk; ++f) sum = sum + repair[f];
        total = total + sum;
      }
      rep[i * V + v] = total;
      next[v] = f;
      due[v] = f < last ? epoch[f] : INFINITY;
    }
  }
  return ffi::Error::Success();
}

// model.lt_bins of a row of lead times (lead_bin, lane by lane).
__attribute__((noinline)) void lead_bins(const double* __restrict lead,
                                         const double* __restrict edges, int32_t* __restrict bin,
                                         int64_t bins, double per_decade, int64_t V) {
  for (int64_t v = 0; v < V; ++v) bin[v] = lead_bin(lead[v], edges, bins, per_decade);
}

// model.add_lead_times: hist (V, B) s32 (the result, aliased) plus one count in lane v's bin for
// each lead time (n, V) that is not NaN; edges (B + 1) f64 (model.LT_EDGES).
ffi::Error LeadHistogram(ffi::Buffer<ffi::S32> hist_b, ffi::Buffer<ffi::F64> leads_b,
                         ffi::Buffer<ffi::F64> edges_b, ffi::ResultBuffer<ffi::S32> out_o) {
  const auto hd = hist_b.dimensions(), ld = leads_b.dimensions();
  if (hd.size() != 2 || ld.size() != 2 || hd[0] != ld[1] ||
      edges_b.element_count() != hd[1] + 1) {
    return ffi::Error::InvalidArgument("twin_lead_histogram: hist (V, B), leads (n, V), edges");
  }
  const int64_t V = hd[0], B = hd[1], n = ld[0];
  int32_t* hist = out_o->typed_data();
  if (hist != hist_b.typed_data()) std::copy_n(hist_b.typed_data(), V * B, hist);
  const double per_decade = static_cast<double>(B) / 10.0;  // model._LT_PER_DECADE
  std::vector<int32_t> bin(V);
  for (int64_t r = 0; r < n; ++r) {
    const double* lead = leads_b.typed_data() + r * V;
    lead_bins(lead, edges_b.typed_data(), bin.data(), B, per_decade, V);
    for (int64_t v = 0; v < V; ++v) {
      if (!std::isnan(lead[v])) ++hist[v * B + bin[v]];
    }
  }
  return ffi::Error::Success();
}

ffi::Error SerialDraws(ffi::Buffer<ffi::U64> seed_b, ffi::Buffer<ffi::S32> j_b,
                       ffi::Buffer<ffi::S32> kind_b, ffi::Buffer<ffi::F64> a_b,
                       ffi::Buffer<ffi::F64> b_b, ffi::Buffer<ffi::U64> gseed_b,
                       ffi::Buffer<ffi::F64> gpar_b, ffi::Buffer<ffi::F64> values_b,
                       ffi::Buffer<ffi::S32> nvalues_b, ffi::ResultBuffer<ffi::F64> out_b) {
  const int64_t V = seed_b.element_count(), K = kind_b.element_count();
  const auto dims = out_b->dimensions();
  if (dims.size() != 3 || dims[0] != K || dims[2] != V) {
    return ffi::Error::InvalidArgument("twin_serial_draws: times must be (K, n, V)");
  }
  const int64_t n = dims[1];
  if (n % kGroup) {
    return ffi::Error::InvalidArgument("twin_serial_draws: n must be whole groups of 16 parts");
  }
  const int64_t m = K * V ? values_b.element_count() / (K * V) : 0;
  const uint64_t* seed = seed_b.typed_data();
  const int32_t* j = j_b.typed_data();
  const int32_t* kind = kind_b.typed_data();
  const double* a = a_b.typed_data();
  const double* b = b_b.typed_data();
  double* out = out_b->typed_data();
  std::vector<char> ok(static_cast<size_t>(n * V));  // gamma: accepted yet
  std::vector<double> u(V), u1(V), z(V);               // a row's uniforms and quantiles
  TailScratch scratch(V);
  for (int64_t k = 0; k < K; ++k) {
    const double* ak = a + k * V;
    const double* bk = b + k * V;
    double* times = out + k * n * V;
    switch (kind[k]) {
      case kDeterministic:
        for (int64_t r = 0; r < n; ++r) std::copy(ak, ak + V, times + r * V);
        break;
      case kExponential:
        for (int64_t r = 0; r < n; ++r) {
          station_row<kExponential>(seed, j, r, k, K, ak, bk, times + r * V, V);
        }
        break;
      case kLognormal:
        for (int64_t r = 0; r < n; ++r) {
          station_row<kLognormal>(seed, j, r, k, K, ak, bk, u.data(), V);
          normal_ppf_row(u.data(), z.data(), scratch, V);
          lognormal_row(z.data(), ak, bk, times + r * V, V);
        }
        break;
      case kUniform:
        for (int64_t r = 0; r < n; ++r) {
          station_row<kUniform>(seed, j, r, k, K, ak, bk, times + r * V, V);
        }
        break;
      case kGamma: {
        const uint64_t* gs = gseed_b.typed_data() + k * 3 * V;  // first, retry, boost streams
        const double* gp = gpar_b.typed_data() + k * 4 * V;     // d, c, 1/shape, boost
        for (int64_t r = 0; r < n; ++r) {
          gamma_first_uniforms(gs, j, r, u.data(), u1.data(), V);
          normal_ppf_row(u.data(), z.data(), scratch, V);
          gamma_first_finish(z.data(), u1.data(), gp, gp + V, times + r * V, ok.data() + r * V, V);
        }
        for (int64_t v = 0; v < V; ++v) {
          gamma_retries(gs[V + v], j[v], gp[v], gp[V + v], times + v, ok.data() + v, n, V);
        }
        // the boost's numbers only where some lane's shape is below 1
        const bool boost = std::any_of(gp + 3 * V, gp + 4 * V, [](double b) { return b != 0.0; });
        for (int64_t r = 0; r < n; ++r) {
          double* row = times + r * V;
          if (boost) {
            gamma_finish<true>(gs + 2 * V, j, r, gp + 2 * V, gp + 3 * V, ak, bk, row, V);
          } else {
            gamma_finish<false>(gs + 2 * V, j, r, gp + 2 * V, gp + 3 * V, ak, bk, row, V);
          }
        }
        break;
      }
      case kEmpirical: {
        const double* vals = values_b.typed_data() + k * V * m;
        const int32_t* nv = nvalues_b.typed_data() + k * V;
        for (int64_t r = 0; r < n; ++r) {
          for (int64_t v = 0; v < V; ++v) {
            const double u = part_uniform(seed[v], j[v], r, k, K);
            const int32_t i = std::min(static_cast<int32_t>(u * nv[v]), nv[v] - 1);
            times[r * V + v] = vals[v * m + i];
          }
        }
        break;
      }
      default:
        return ffi::Error::InvalidArgument("twin_serial_draws: unknown distribution family");
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwinSerialDraws, SerialDraws,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U64>>()  // seed
                                  .Arg<ffi::Buffer<ffi::S32>>()  // j
                                  .Arg<ffi::Buffer<ffi::S32>>()  // kind
                                  .Arg<ffi::Buffer<ffi::F64>>()  // a
                                  .Arg<ffi::Buffer<ffi::F64>>()  // b
                                  .Arg<ffi::Buffer<ffi::U64>>()  // gseed
                                  .Arg<ffi::Buffer<ffi::F64>>()  // gpar
                                  .Arg<ffi::Buffer<ffi::F64>>()  // values
                                  .Arg<ffi::Buffer<ffi::S32>>()  // nvalues
                                  .Ret<ffi::Buffer<ffi::F64>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwinSerialDowntime, SerialDowntime,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()  // proc
                                  .Arg<ffi::Buffer<ffi::U64>>()  // seed
                                  .Arg<ffi::Buffer<ffi::F64>>()  // mtbf
                                  .Arg<ffi::Buffer<ffi::F64>>()  // mttr
                                  .Arg<ffi::Buffer<ffi::F64>>()  // since
                                  .Arg<ffi::Buffer<ffi::S32>>()  // count
                                  .Arg<ffi::Buffer<ffi::S32>>()  // block
                                  .Ret<ffi::Buffer<ffi::F64>>()  // repairs by part
                                  .Ret<ffi::Buffer<ffi::F64>>()  // since
                                  .Ret<ffi::Buffer<ffi::S32>>());  // count

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwinLeadHistogram, LeadHistogram,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S32>>()  // hist
                                  .Arg<ffi::Buffer<ffi::F64>>()  // leads
                                  .Arg<ffi::Buffer<ffi::F64>>()  // edges
                                  .Ret<ffi::Buffer<ffi::S32>>());
