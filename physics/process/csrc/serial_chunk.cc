// The serial fast path's (max,+) recursion and window statistics for one chunk of parts, as an
// XLA FFI handler for the CPU (physics/process/native.py builds and registers it).
//
// It computes exactly what serial._chunk_batch's scan computes, in the same order, lane by lane,
// so the results are the same bit for bit (compiled with -ffp-contract=off; fused multiply-adds,
// std::fma, only where XLA:CPU fuses them). The scan is about 115 small XLA kernels a part; here
// a part is one pass over the stations, each a loop over the lanes that the compiler vectorizes.
//
// Layout: lanes last everywhere (V lanes, K stations, n parts, R = ring - 1 register slots).
//   args: lo (V) f64, hi (V) f64, capacity (K, V) i32, transit (K, V) f64, repair_of (K) i32
//         (index of the station's repair-time array among the trailing ones, -1: none),
//         fk (4, K, V) f64 [d_prev, busy, down, blocked], starts (K, R, V) f64 (newest first),
//         fv (3, V) f64 [lt_sum, wip_int, last_out], produced (K, V) i32, delivered (V) i32,
//         then K service-time arrays (n, V) f64 (processing plus repair time), then the repair
//         times (n, V) f64 of the failing stations.
//   rets: fk, starts, fv, produced, delivered as above, and leads (n, V) f64 (NaN: outside),
//         binned by XLA (model.add_lead_times: its vectorized logarithm beats libm's here).
// The share of a failing station's service spent down is repair / service (0 for a zero service
// time), computed here. (The service times come from XLA: it fuses the sum of processing and
// repair time with the processing time's own product, one rounding fewer than two operations.)

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// jnp.maximum / jnp.minimum for numbers that are never NaN: times are finite or -inf (nothing
// yet) and the window's ends finite or +inf. (Propagating NaN as XLA does kept the compiler
// from vectorizing cleanly: a third slower.)
inline double vmax(double a, double b) { return a > b ? a : b; }
inline double vmin(double a, double b) { return a < b ? a : b; }

// serial._overlap: the length of [a, b] inside the window [lo, hi].
inline double overlap(double a, double b, double lo, double hi) {
  return vmax(0.0, vmin(b, hi) - vmax(a, lo));
}

// One station's update for part j, every lane: sv the service times, w what the departure waits
// for (-inf: nothing), tr the transit to the next station, avail the part's arrival (out: its
// arrival at the next station), dp the previous part's departure (out: this part's), slot the
// register slot for the start; rp (repair times) and down only where the station fails. A
// function of its own with restrict-qualified arguments, so that the compiler vectorizes it.
template <bool kFails>
__attribute__((noinline)) void station(
    const double* __restrict sv, const double* __restrict w, const double* __restrict tr,
    const double* __restrict lo, const double* __restrict hi, double* __restrict avail,
    double* __restrict dp, double* __restrict slot, double* __restrict bz,
    double* __restrict bl, int32_t* __restrict pr, const double* __restrict rp,
    double* __restrict down, int64_t V) {
  for (int64_t v = 0; v < V; ++v) {
    const double s = sv[v];
    double f = 0.0;
    if constexpr (kFails) f = s > 0 ? rp[v] / s : 0.0;  // the share of the service spent down
    const double start = vmax(avail[v], dp[v]);
    const double c = start + s;
    const double d = vmax(c, w[v]);
    avail[v] = d + tr[v];
    dp[v] = d;
    slot[v] = start;
    const double run = overlap(start, c, lo[v], hi[v]);
    if constexpr (kFails) {
      // XLA:CPU contracts these multiply-adds (LLVM's fmuladd): so do we, to match bit for bit
      bz[v] = std::fma(run, 1.0 - f, bz[v]);
      down[v] = std::fma(run, f, down[v]);
    } else {
      bz[v] = bz[v] + run;  // run * (1 - 0), bit for bit
    }
    bl[v] = bl[v] + overlap(c, d, lo[v], hi[v]);
    pr[v] += (c > lo[v]) & (c <= hi[v]);
  }
}

ffi::Error SerialChunk(ffi::Buffer<ffi::F64> lo_b, ffi::Buffer<ffi::F64> hi_b,
                       ffi::Buffer<ffi::S32> cap_b, ffi::Buffer<ffi::F64> transit_b,
                       ffi::Buffer<ffi::S32> repair_of_b, ffi::Buffer<ffi::F64> fk_b,
                       ffi::Buffer<ffi::F64> starts_b, ffi::Buffer<ffi::F64> fv_b,
                       ffi::Buffer<ffi::S32> produced_b, ffi::Buffer<ffi::S32> delivered_b,
                       ffi::RemainingArgs rest, ffi::ResultBuffer<ffi::F64> fk_o,
                       ffi::ResultBuffer<ffi::F64> starts_o, ffi::ResultBuffer<ffi::F64> fv_o,
                       ffi::ResultBuffer<ffi::S32> produced_o,
                       ffi::ResultBuffer<ffi::S32> delivered_o,
                       ffi::ResultBuffer<ffi::F64> leads_o) {
  const auto sdims = starts_b.dimensions();
  if (sdims.size() != 3) return ffi::Error::InvalidArgument("starts must be (K, R, V)");
  const int64_t K = sdims[0], R = sdims[1], V = sdims[2];
  const auto ldims = leads_o->dimensions();
  if (ldims.size() != 2 || ldims[1] != V) return ffi::Error::InvalidArgument("leads: (n, V)");
  const int64_t n = ldims[0];
  if (K < 1 || R < 1) return ffi::Error::InvalidArgument("empty line or register");
  if (fk_b.element_count() != size_t(4 * K * V) || fv_b.element_count() != size_t(3 * V) ||
      cap_b.element_count() != size_t(K * V) || transit_b.element_count() != size_t(K * V) ||
      repair_of_b.element_count() != size_t(K) || lo_b.element_count() != size_t(V) ||
      hi_b.element_count() != size_t(V) || produced_b.element_count() != size_t(K * V) ||
      delivered_b.element_count() != size_t(V))
    return ffi::Error::InvalidArgument("serial chunk: inconsistent shapes");

  const int32_t* repair_of = repair_of_b.typed_data();
  std::vector<const double*> serv(K), repair(K, nullptr);
  for (int64_t k = 0; k < K; ++k) {
    auto a = rest.get<ffi::AnyBuffer>(k);
    if (a.has_error()) return a.error();
    if (a->element_type() != ffi::DataType::F64 || a->element_count() != size_t(n * V))
      return ffi::Error::InvalidArgument("service times: (n, V) float64 per station");
    serv[k] = a->typed_data<double>();
  }
  for (int64_t k = 0; k < K; ++k) {
    if (repair_of[k] < 0) continue;
    auto a = rest.get<ffi::AnyBuffer>(K + repair_of[k]);
    if (a.has_error()) return a.error();
    if (a->element_type() != ffi::DataType::F64 || a->element_count() != size_t(n * V))
      return ffi::Error::InvalidArgument("repair times: (n, V) float64 per failing station");
    repair[k] = a->typed_data<double>();
  }

  const double* lo = lo_b.typed_data();
  const double* hi = hi_b.typed_data();
  const int32_t* cap = cap_b.typed_data();
  const double* transit = transit_b.typed_data();
  double* fk = fk_o->typed_data();
  std::memcpy(fk, fk_b.typed_data(), sizeof(double) * 4 * K * V);
  double* d_prev = fk;
  double* busy = fk + K * V;
  double* down = fk + 2 * K * V;
  double* blocked = fk + 3 * K * V;
  double* fv = fv_o->typed_data();
  std::memcpy(fv, fv_b.typed_data(), sizeof(double) * 3 * V);
  double* lt_sum = fv;
  double* wip_int = fv + V;
  double* last_out = fv + 2 * V;
  int32_t* produced = produced_o->typed_data();
  std::memcpy(produced, produced_b.typed_data(), sizeof(int32_t) * K * V);
  int32_t* delivered = delivered_o->typed_data();
  std::memcpy(delivered, delivered_b.typed_data(), sizeof(int32_t) * V);
  double* leads = leads_o->typed_data();

  // The shift register of start times as a ring: slot (head + p) % R holds the start of the
  // part p places back (p = 0: the newest). All lanes advance together, one part a step.
  std::vector<double> ring(starts_b.typed_data(), starts_b.typed_data() + K * R * V);
  int64_t head = 0;
  const double neg = -std::numeric_limits<double>::infinity();
  std::vector<double> wait((K > 1 ? K - 1 : 1) * V), avail(V), start0(V), ninf(V, neg);

  // the register slot, counted from the newest, of the part each link waits for (b_k - 1;
  // -1: direct handoff, b_k == 0); the register holds R >= b_k slots. `same` is that slot where
  // every lane has the same capacity (the common case: then a link reads a whole row), else kMixed.
  constexpr int32_t kMixed = -2;
  std::vector<int32_t> back((K > 1 ? K - 1 : 1) * V), same(K, kMixed);
  for (int64_t k = 0; k + 1 < K; ++k) {
    for (int64_t v = 0; v < V; ++v) {
      const int32_t b = cap[k * V + v];
      if (b < 0 || b > R) return ffi::Error::InvalidArgument("a capacity outside the register");
      back[k * V + v] = b - 1;
    }
    same[k] = back[k * V];
    for (int64_t v = 1; v < V; ++v)
      if (back[k * V + v] != same[k]) same[k] = kMixed;
  }
  std::vector<const double*> waits(K);

  for (int64_t j = 0; j < n; ++j) {
    // What part j waits for behind station k, from the state the previous part left: the next
    // station's start of part j - b_k, or its previous departure if b_k == 0. (Station k reads
    // these rows before station k + 1 overwrites them.)
    for (int64_t k = 0; k + 1 < K; ++k) {
      const double* nxt_dep = d_prev + (k + 1) * V;
      const double* nxt_ring = ring.data() + (k + 1) * R * V;
      if (same[k] == -1) {
        waits[k] = nxt_dep;
      } else if (same[k] >= 0) {
        waits[k] = nxt_ring + ((head + same[k]) % R) * V;
      } else {
        const int32_t* __restrict off = back.data() + k * V;
        double* __restrict w = wait.data() + k * V;
        for (int64_t v = 0; v < V; ++v) {
          int32_t slot = int32_t(head) + (off[v] < 0 ? 0 : off[v]);
          slot -= slot >= R ? int32_t(R) : 0;
          w[v] = off[v] < 0 ? nxt_dep[v] : nxt_ring[int64_t(slot) * V + v];
        }
        waits[k] = w;
      }
    }
    waits[K - 1] = ninf.data();
    head = (head + R - 1) % R;  // the new part takes the oldest slot
    for (int64_t v = 0; v < V; ++v) avail[v] = neg;
    for (int64_t k = 0; k < K; ++k) {
      const double* w = waits[k];
      double* slot = ring.data() + (k * R + head) * V;
      if (repair[k])
        station<true>(serv[k] + j * V, w, transit + k * V, lo, hi, avail.data(), d_prev + k * V,
                      slot, busy + k * V, blocked + k * V, produced + k * V, repair[k] + j * V,
                      down + k * V, V);
      else
        station<false>(serv[k] + j * V, w, transit + k * V, lo, hi, avail.data(),
                       d_prev + k * V, slot, busy + k * V, blocked + k * V, produced + k * V,
                       nullptr, nullptr, V);
      if (k == 0) std::memcpy(start0.data(), slot, sizeof(double) * V);
    }
    const double* out = d_prev + (K - 1) * V;
    double* lead_row = leads + j * V;
    for (int64_t v = 0; v < V; ++v) {
      const bool in_win = (out[v] > lo[v]) & (out[v] <= hi[v]);
      const double lead = out[v] - start0[v];
      delivered[v] += in_win;
      lt_sum[v] = lt_sum[v] + (in_win ? lead : 0.0);
      wip_int[v] = wip_int[v] + overlap(start0[v], out[v], lo[v], hi[v]);
      last_out[v] = out[v];
      lead_row[v] = in_win ? lead : std::numeric_limits<double>::quiet_NaN();
    }
  }

  // The register back in order, newest first.
  double* so = starts_o->typed_data();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t p = 0; p < R; ++p)
      std::memcpy(so + (k * R + p) * V, ring.data() + (k * R + (head + p) % R) * V,
                  sizeof(double) * V);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwinSerialChunk, SerialChunk,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()  // lo
                                  .Arg<ffi::Buffer<ffi::F64>>()  // hi
                                  .Arg<ffi::Buffer<ffi::S32>>()  // capacity
                                  .Arg<ffi::Buffer<ffi::F64>>()  // transit
                                  .Arg<ffi::Buffer<ffi::S32>>()  // repair_of
                                  .Arg<ffi::Buffer<ffi::F64>>()  // fk
                                  .Arg<ffi::Buffer<ffi::F64>>()  // starts
                                  .Arg<ffi::Buffer<ffi::F64>>()  // fv
                                  .Arg<ffi::Buffer<ffi::S32>>()  // produced
                                  .Arg<ffi::Buffer<ffi::S32>>()  // delivered
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F64>>());
