// The general engine's event loop for the CPU, as an XLA FFI handler (physics/process/native.py
// builds it with the serial kernels into one library and registers it as twin_general_chunk).
//
// It runs what engine._chunk_lanes runs: up to `chunk` steps of every lane still at or before
// its horizon, each step one event (engine._step_event: the earliest completion, failure,
// repair, arrival or conveyor head, ties to the first in that order) and the transfer phase
// after it (engine._transfer: passes over the stations in their order, each station pushing
// its finished parts on and then pulling new ones, each pass ending with the forward pulls,
// until no part can move). XLA runs every lane in lockstep, about 25 small kernels an event;
// here each lane runs on its own, one event after the other, with the same semantics and the
// same arithmetic: the results are the same bit for bit (tests/test_process_native_general.py
// compares whole runs of random lines). Two differences of method, not of result:
//   - XLA draws a processing time for every server slot at every event (any of them may start
//     a part); a draw is a pure function of (lane key, event number, slot), so here a slot's
//     time is drawn only when it starts a part;
//   - lead times go straight into the histogram instead of a table binned at the chunk's end.
// Gamma times repeat dists.gamma's few-variate path (JAX's threefry keys and uniforms, the
// retry rounds over a station's rejected variates); a gamma station of more than 8 servers,
// which XLA draws by its bulk path, is refused (general_native.applies keeps it in XLA).
//
// Layout: lanes first, one row a lane. The state is the public engine.State, every f64 field
// flattened into one row of `sf` and every s32 field into one row of `si` (buffers oldest
// first, their heads 0); the parameters likewise in `pf` and `pi`. `topo` holds the line's
// static structure and the offsets of every field in those rows, in the order
// physics/process/native.py writes them (general_topology).
//
//   args: topo (T) s32, key (V, 2) u32, pf (V, PF) f64, pi (V, PI) s32, edges (LT_BINS + 1)
//         f64, ctl (2) s32: the chunk's steps and the threads to use,
//         sf (V, F) f64, si (V, I) s32, hist (V, LT_BINS) s32 (the last three updated in place)
//   rets: sf, si, hist.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#include "twin_numerics.h"

namespace ffi = xla::ffi;

namespace {

using namespace twin;  // NOLINT: the shared numerics

constexpr int32_t kIdle = 0, kBusy = 1, kBlocked = 2, kDown = 3;
constexpr int32_t kProbability = 0, kRoundRobin = 1, kShortestQueue = 2;
constexpr int32_t kNoFailures = 0, kOperation = 1, kTime = 2;
constexpr uint32_t kCounterTag = 0x7E57;  // dists.COUNTER_TAG
constexpr double kInf = std::numeric_limits<double>::infinity();

// The state's and parameters' fields, in the order of their offsets in `topo`.
enum FField { fNow, fTEnd, fTFail, fTRep, fTtf, fRem, fRel, fBlk, fRingT, fRingR, fQT, fNextArr,
              fAcc, fWipInt, fLtSum, kFFields };
enum IField { iNEvents, iSt, iPrev, iDest, iCount, iQHead, iQCount, iRr, iWip, iDelivered,
              iProduced, iScrapped, iCompletions, iLost, kIFields };
enum PFField { pA, pB, pValues, pScrap, pMtbf, pMttr, pTransit, pWeights, pIaA, pIaB, pIaValues,
               pWarmup, pHorizon, pG, pIaG, kPFFields };
enum PIField { pNValues, pServers, pCapacity, pIaNValues, kPIFields };

// The line's static structure (engine._tables and the Model), read from `topo`.
struct Topo {
  int N = 0, S = 0, B = 0, Q = 0, R = 0, QS = 0, M = 0, W = 0;
  int off_f[kFFields], off_i[kIFields], off_pf[kPFFields], off_pi[kPIFields];
  int F = 0, I = 0, PF = 0, PI = 0;
  // stations
  std::vector<int> kind, max_servers, offset, fmode, routing, source_of;
  std::vector<std::vector<int>> outs, ins;
  std::vector<int> single_pull;  // forward_pulls visits it (one server, with inputs or a source)
  std::vector<int> pulls;  // pull() may take a part: a source, or inputs that queue or hand over
  // buffers
  std::vector<int> src, dst, may_handoff, may_queue, pulled, pos_v;
  std::vector<int> out_pos;  // the buffer's place among its source station's outputs
  // slots
  std::vector<int> station, local, keeps_dest, keeps_blk, pos_f, pos_r;
  // sources
  std::vector<int> src_station, src_kind;
  std::vector<int> order;
  bool ok = false;
};

struct Reader {
  const int32_t* p;
  int64_t n, at = 0;
  bool bad = false;
  int next() {
    if (at >= n) {
      bad = true;
      return 0;
    }
    return p[at++];
  }
  std::vector<int> list(int count) {
    std::vector<int> out(std::max(count, 0));
    for (auto& x : out) x = next();
    return out;
  }
};

Topo read_topo(const int32_t* p, int64_t n) {
  Reader r{p, n};
  Topo t;
  t.N = r.next(), t.S = r.next(), t.B = r.next(), t.Q = r.next();
  t.R = r.next(), t.QS = r.next(), t.M = r.next(), t.W = r.next();
  for (int& o : t.off_f) o = r.next();
  t.F = r.next();
  for (int& o : t.off_i) o = r.next();
  t.I = r.next();
  for (int& o : t.off_pf) o = r.next();
  t.PF = r.next();
  for (int& o : t.off_pi) o = r.next();
  t.PI = r.next();
  t.kind = r.list(t.S), t.max_servers = r.list(t.S), t.offset = r.list(t.S);
  t.fmode = r.list(t.S), t.routing = r.list(t.S), t.source_of = r.list(t.S);
  t.outs.resize(t.S), t.ins.resize(t.S);
  for (int i = 0; i < t.S; ++i) t.outs[i] = r.list(r.next());
  for (int i = 0; i < t.S; ++i) t.ins[i] = r.list(r.next());
  t.src = r.list(t.B), t.dst = r.list(t.B), t.may_handoff = r.list(t.B);
  t.may_queue = r.list(t.B), t.pulled = r.list(t.B), t.pos_v = r.list(t.B);
  t.station = r.list(t.N), t.local = r.list(t.N), t.keeps_dest = r.list(t.N);
  t.keeps_blk = r.list(t.N), t.pos_f = r.list(t.N), t.pos_r = r.list(t.N);
  t.src_station = r.list(t.Q), t.src_kind = r.list(t.Q);
  t.order = r.list(t.S);
  t.single_pull.resize(t.S);
  t.pulls.resize(t.S);
  t.out_pos.assign(t.B, -1);
  for (int i = 0; i < t.S; ++i) {
    for (size_t k = 0; k < t.outs[i].size(); ++k) {
      const int e = t.outs[i][k];
      if (e >= 0 && e < t.B) t.out_pos[e] = static_cast<int>(k);
    }
  }
  for (int j = 0; j < t.S; ++j) {
    t.single_pull[j] = t.max_servers[j] == 1 && (!t.ins[j].empty() || t.source_of[j] >= 0);
    t.pulls[j] = t.source_of[j] >= 0;
    for (int e : t.ins[j]) t.pulls[j] |= t.may_queue[e] || t.pulled[e];
  }
  t.ok = !r.bad && r.at == n && t.N >= 0 && t.S > 0 && t.R > 0 && t.QS > 0 && t.M > 0 &&
         t.W > 0;
  return t;
}

// dists.philox4x32: Philox4x32-10 of the counter (c0, c1, c2, c3) under the key (k0, k1).
inline void philox(uint32_t k0, uint32_t k1, uint32_t x0, uint32_t x1, uint32_t x2, uint32_t x3,
                   uint32_t out[4]) {
  for (int r = 0; r < 10; ++r) {
    if (r) k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
    const uint64_t p0 = static_cast<uint64_t>(x0) * 0xD2511F53ull;
    const uint64_t p1 = static_cast<uint64_t>(x2) * 0xCD9E8D57ull;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    x0 = hi1 ^ x1 ^ k0, x1 = lo1, x2 = hi0 ^ x3 ^ k1, x3 = lo0;
  }
  out[0] = x0, out[1] = x1, out[2] = x2, out[3] = x3;
}

inline double unit_f64(uint32_t hi, uint32_t lo) {
  return unit_from_bits((static_cast<uint64_t>(hi) << 32) | lo);
}

// Number `index` of dists.counter_uniforms(key, counter, n): two uniforms a Philox block.
inline double counter_uniform(uint32_t k0, uint32_t k1, uint32_t counter, uint32_t index) {
  uint32_t w[4];
  philox(k0, k1, counter, index / 2, kCounterTag, 0, w);
  return index % 2 ? unit_f64(w[2], w[3]) : unit_f64(w[0], w[1]);
}

// JAX's threefry2x32 (Salmon et al., SC'11), as jax._src.random.threefry2x32 lowers it: the
// gamma sampler's keys and uniforms (jax.random.fold_in, split and uniform).
struct TfKey {
  uint32_t a, b;
};

inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

inline TfKey threefry(TfKey k, uint32_t x0, uint32_t x1) {
  static constexpr int kRot[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};
  const uint32_t ks[3] = {k.a, k.b, k.a ^ k.b ^ 0x1BD11BDAu};
  x0 += ks[0], x1 += ks[1];
  for (int i = 0; i < 5; ++i) {
    for (int r : kRot[i % 2]) x0 += x1, x1 = rotl(x1, r), x1 ^= x0;
    x0 += ks[(i + 1) % 3], x1 += ks[(i + 2) % 3] + static_cast<uint32_t>(i + 1);
  }
  return {x0, x1};
}

// jax.random.fold_in(k, d), which is also key d of jax.random.split(k, n) (the partitionable
// threefry, jax's default).
inline TfKey fold_in(TfKey k, uint32_t d) { return threefry(k, 0, d); }

// Number `index` (flat) of jax.random.uniform(k, shape, float64).
inline double tf_uniform(TfKey k, uint64_t index) {
  const TfKey o = threefry(k, static_cast<uint32_t>(index >> 32), static_cast<uint32_t>(index));
  return unit_f64(o.a, o.b);
}

constexpr int kMaxFew = 8;  // dists.GAMMA_RETRY_SLOTS

// dists.gamma's few-variate path: n <= kMaxFew standard gamma variates of one shape (g: d, c,
// 1 / shape and whether it is boosted, as dists.gamma_constants computes them) from `key`: two
// proposals each up front, then rounds in which the rejected variates, in order, take fresh
// proposals from the round's slots. The shape is 1 / cv^2, and XLA rewrites the boost's division
// by it as a product with cv^2 (g[2]).
inline void gamma_few(TfKey key, int n, const double* g, double* out) {
  const double d = g[0], c = g[1], inv_shape = g[2];
  const TfKey first = fold_in(key, 0), more = fold_in(key, 1), boost = fold_in(key, 2);
  char got[kMaxFew];
  for (int j = 0; j < n; ++j) {
    // uniforms (2, 2, n): [normal or test][proposal][variate]; the first accepted wins
    char ok0, ok1;
    const double v0 = propose(tf_uniform(first, j), tf_uniform(first, 2 * n + j), d, c, &ok0);
    const double v1 = propose(tf_uniform(first, n + j), tf_uniform(first, 3 * n + j), d, c, &ok1);
    out[j] = ok0 ? v0 : v1;
    got[j] = ok0 || ok1;
  }
  for (uint32_t round = 0;; ++round) {
    int idx[kMaxFew], m = 0;
    for (int j = 0; j < n; ++j) {
      if (!got[j]) idx[m++] = j;
    }
    if (!m) break;
    const TfKey k = fold_in(more, round);  // uniforms (2, 1, n): slot s takes number s
    for (int s = 0; s < m; ++s) {
      char ok;
      out[idx[s]] = propose(tf_uniform(k, s), tf_uniform(k, n + s), d, c, &ok);
      got[idx[s]] = ok;
    }
  }
  if (g[3] != 0.0) {
    for (int j = 0; j < n; ++j) out[j] *= exp_(log_(1.0 - tf_uniform(boost, j)) * inv_shape);
  }
}

// dists.sample for one uniform: a (deterministic and exponential: the mean; lognormal: mu;
// uniform: low), b (lognormal: sigma; uniform: high - low), an empirical table of nv values.
inline double sample(int kind, double u, double a, double b, const double* values, int32_t nv) {
  u = clip(u, 1e-12, 1.0 - 1e-12);
  switch (kind) {
    case kDeterministic:
      return a;
    case kExponential:
      return a * -log_(1.0 - u);
    case kLognormal:
      return exp_(std::fma(b, normal_ppf(u), a));
    case kUniform:
      return std::fma(b, u, a);
    default: {  // kEmpirical
      const int32_t k = std::min(static_cast<int32_t>(u * nv), nv - 1);
      return values[k];
    }
  }
}

// t plus a draw of dists.sample: XLA:CPU fuses the sample into the sum, and contracts the
// exponential's last product into it.
inline double plus_sample(double t, int kind, double u, double a, double b, const double* values,
                          int32_t nv) {
  if (kind == kExponential) return std::fma(a, -log_(1.0 - clip(u, 1e-12, 1.0 - 1e-12)), t);
  return t + sample(kind, u, a, b, values, nv);
}

// One lane: pointers into its rows, and the step's context.
struct Lane {
  const Topo& T;
  // state
  double *now, *t_end, *t_fail, *t_rep, *ttf, *rem, *rel, *blk, *ring_t, *ring_r, *q_t,
      *next_arr, *acc, *wip_int, *lt_sum;
  int32_t *n_events, *st, *prev, *dest, *count, *q_head, *q_count, *rr, *wip, *delivered,
      *produced, *scrapped, *completions, *lost, *hist;
  // parameters
  const double *pa, *pb, *values, *scrap, *mtbf, *mttr, *transit, *weights, *ia_a, *ia_b,
      *ia_values, *pg, *ia_g;
  double warmup, horizon;
  const int32_t *nvalues, *servers, *capacity, *ia_nvalues;
  uint32_t k0, k1;
  const double* edges;
  int32_t bins;
  // the step
  double t = 0.0;
  uint32_t ctr = 0;  // the step's event number (its draws)
  bool in_window = false;
  std::vector<char> active;
  std::vector<int> n_idle, n_blocked;  // per station (see set())
  // gamma stations: the step's variates of all their slots (drawn together), and its step
  std::vector<double> gamma_draw;
  std::vector<int64_t> gamma_step;

  Lane(const Topo& T_, double* sf, int32_t* si, const double* pf, const int32_t* pi,
       const uint32_t* key, int32_t* hist_, const double* edges_, int32_t bins_)
      : T(T_), hist(hist_), edges(edges_), bins(bins_),
        active(T_.N),
        n_idle(T_.S),
        n_blocked(T_.S),
        gamma_draw(T_.N),
        gamma_step(T_.S, -1) {
    const int* o = T.off_f;
    now = sf + o[fNow], t_end = sf + o[fTEnd], t_fail = sf + o[fTFail], t_rep = sf + o[fTRep];
    ttf = sf + o[fTtf], rem = sf + o[fRem], rel = sf + o[fRel], blk = sf + o[fBlk];
    ring_t = sf + o[fRingT], ring_r = sf + o[fRingR], q_t = sf + o[fQT];
    next_arr = sf + o[fNextArr], acc = sf + o[fAcc], wip_int = sf + o[fWipInt];
    lt_sum = sf + o[fLtSum];
    const int* q = T.off_i;
    n_events = si + q[iNEvents], st = si + q[iSt], prev = si + q[iPrev], dest = si + q[iDest];
    count = si + q[iCount], q_head = si + q[iQHead], q_count = si + q[iQCount];
    rr = si + q[iRr], wip = si + q[iWip], delivered = si + q[iDelivered];
    produced = si + q[iProduced], scrapped = si + q[iScrapped];
    completions = si + q[iCompletions], lost = si + q[iLost];
    const int* a = T.off_pf;
    pa = pf + a[pA], pb = pf + a[pB], values = pf + a[pValues], scrap = pf + a[pScrap];
    mtbf = pf + a[pMtbf], mttr = pf + a[pMttr], transit = pf + a[pTransit];
    weights = pf + a[pWeights], ia_a = pf + a[pIaA], ia_b = pf + a[pIaB];
    ia_values = pf + a[pIaValues], warmup = pf[a[pWarmup]], horizon = pf[a[pHorizon]];
    pg = pf + a[pG], ia_g = pf + a[pIaG];
    const int* b = T.off_pi;
    nvalues = pi + b[pNValues], servers = pi + b[pServers], capacity = pi + b[pCapacity];
    ia_nvalues = pi + b[pIaNValues];
    k0 = key[0], k1 = key[1];
    for (int k = 0; k < T.N; ++k) {
      active[k] = T.local[k] < servers[T.station[k]];
      n_idle[T.station[k]] += idle(k);
      n_blocked[T.station[k]] += st[k] == kBlocked;
    }
  }

  double u(uint32_t index) const { return counter_uniform(k0, k1, ctr, index); }

  // Server states change only through set(), which keeps each station's count of idle (and
  // active) and of blocked servers: a station with none of either is skipped at once.
  void set(int n, int32_t value) {
    const int i = T.station[n];
    n_idle[i] -= idle(n);
    n_blocked[i] -= st[n] == kBlocked;
    st[n] = value;
    n_idle[i] += idle(n);
    n_blocked[i] += st[n] == kBlocked;
  }
  double* rt(int e) { return ring_t + static_cast<int64_t>(e) * T.R; }
  double* rr_(int e) { return ring_r + static_cast<int64_t>(e) * T.R; }

  bool idle(int n) const { return st[n] == kIdle && active[n]; }
  bool idle_any(int j) const { return n_idle[j] > 0; }
  int cnt(int e) const { return T.may_queue[e] ? count[e] : 0; }
  double head_ready(int e) { return rt(e)[0] + transit[e]; }

  // The step's gamma key (engine._gamma_key): its first two Philox words.
  TfKey gamma_key() const {
    uint32_t w[4];
    philox(k0, k1, ctr, 0, kCounterTag + 1, 0, w);
    return {w[0], w[1]};
  }

  // t plus a gamma time of mean a and cv b from the standard variate x, as XLA rounds it.
  static double plus_gamma(double t, double x, double a, double b) {
    return std::fma(x * a * b, b, t);
  }

  // _Xfer.start: slot n starts a part released at r; its time is the step's draw for n.
  void start(int n, double r) {
    const int i = T.station[n];
    set(n, kBusy);
    if (T.kind[i] == kGamma) {
      if (gamma_step[i] != ctr) {  // the station's slots draw together (engine._process_times)
        gamma_few(fold_in(gamma_key(), static_cast<uint32_t>(i)), T.max_servers[i],
                  pg + 4 * static_cast<int64_t>(i), gamma_draw.data() + T.offset[i]);
        gamma_step[i] = ctr;
      }
      t_end[n] = plus_gamma(t, gamma_draw[n], pa[i], pb[i]);
    } else {
      t_end[n] = plus_sample(t, T.kind[i], u(static_cast<uint32_t>(n)), pa[i], pb[i],
                             values + static_cast<int64_t>(i) * T.M, nvalues[i]);
    }
    rel[n] = r;
    if (T.fmode[i] == kOperation) t_fail[n] = t + ttf[n];
  }

  bool room(int e) {
    const int32_t cap = capacity[e];
    bool out = false;
    if (T.may_queue[e]) out = out || (cap > 0 && cnt(e) < cap);
    if (T.may_handoff[e] && !T.pulled[e]) out = out || (cap == 0 && idle_any(T.dst[e]));
    return out;
  }

  static void ring_push(double* ring, int32_t c, int R, double value) {
    if (c >= 0 && c < R) ring[c] = value;
  }
  static void ring_pop(double* ring, int R) {
    for (int k = 0; k + 1 < R; ++k) ring[k] = ring[k + 1];
  }

  // At most one of a sink's servers is blocked in a step (only its completion blocks one), so
  // the sum of lead times has at most one term that is not zero.
  void deliver(int i) {
    if (!n_blocked[i]) return;
    double sum = 0.0;
    int32_t counted = 0, freed = 0;
    for (int n = T.offset[i]; n < T.offset[i] + T.max_servers[i]; ++n) {
      if (st[n] != kBlocked) continue;
      ++freed;
      if (in_window) {
        const double lead = t - rel[n];
        ++counted;
        sum += lead;
        hist[lead_bin(lead, edges, bins, bins / 10.0)] += 1;
      }
      set(n, kIdle);
    }
    *lt_sum = *lt_sum + sum;
    *delivered += counted;
    *wip -= freed;
  }

  void push(int i) {
    if (!n_blocked[i]) return;
    const std::vector<int>& outs = T.outs[i];
    const int n_out = static_cast<int>(outs.size());
    const int policy = T.routing[i];
    for (int n = T.offset[i]; n < T.offset[i] + T.max_servers[i]; ++n) {
      if (st[n] != kBlocked) continue;
      int choice = 0;
      bool go;
      if (n_out == 1) {
        go = room(outs[0]);
      } else if (policy == kProbability) {
        choice = dest[n];
        go = choice >= 0 && choice < n_out && room(outs[choice]);
      } else {
        // every output's room first, then the score (as XLA evaluates them)
        bool rooms[64];
        bool any = false;
        for (int k = 0; k < n_out; ++k) any |= (rooms[k] = room(outs[k]));
        int64_t best = 0;
        for (int k = 0; k < n_out; ++k) {
          int64_t score;
          if (policy == kShortestQueue) {
            score = rooms[k] ? static_cast<int64_t>(cnt(outs[k])) * n_out + k
                             : std::numeric_limits<int32_t>::max();
          } else {
            const int32_t ptr = rr[i];
            score = rooms[k] ? ((k - ptr) % n_out + n_out) % n_out : n_out + 1;
          }
          if (k == 0 || score < best) best = score, choice = k;
        }
        go = any;
      }
      if (!go) continue;
      const double r = rel[n];
      const int e = outs[choice];
      const int32_t cap = capacity[e];
      if (T.may_queue[e] && cap > 0) {
        ring_push(rt(e), count[e], T.R, t);
        ring_push(rr_(e), count[e], T.R, r);
        count[e] += 1;
      }
      if (T.may_handoff[e] && !T.pulled[e] && cap == 0) {
        const int j = T.dst[e];
        for (int tn = T.offset[j]; tn < T.offset[j] + T.max_servers[j]; ++tn) {
          if (idle(tn)) {
            start(tn, r);
            break;
          }
        }
      }
      if (n_out > 1 && policy == kRoundRobin) rr[i] = (choice + 1) % n_out;
      set(n, kIdle);
    }
  }

  void pull(int j) {
    if (!n_idle[j]) return;
    const int q = T.source_of[j];
    const std::vector<int>& ins = T.ins[j];
    if (ins.empty() && q < 0) {  // saturated: every idle server starts a new part now
      int32_t started = 0;
      for (int n = T.offset[j]; n < T.offset[j] + T.max_servers[j]; ++n) {
        if (idle(n)) start(n, t), ++started;
      }
      *wip += started;
      return;
    }
    if (!T.pulls[j]) return;
    for (int n = T.offset[j]; n < T.offset[j] + T.max_servers[j]; ++n) {
      if (!idle(n)) continue;
      // the candidates in file order; the first earliest ready wins (jnp.argmin)
      double best = kInf;
      int kind = -1, be = -1, bun = -1;  // kind 0: queue, 1: handoff, 2: source
      bool any = false;
      for (int e : ins) {
        if (T.may_queue[e]) {
          const double ready = head_ready(e);
          bool ok = cnt(e) > 0 && ready <= t;
          if (T.may_handoff[e]) ok = ok && capacity[e] > 0;
          if (ok) {
            any = true;
            if (kind < 0 || ready < best) best = ready, kind = 0, be = e;
          }
        }
        if (T.pulled[e]) {
          const int up = T.src[e];
          for (int un = T.offset[up]; un < T.offset[up] + T.max_servers[up]; ++un) {
            bool ok = st[un] == kBlocked && capacity[e] == 0;
            if (T.keeps_dest[un]) ok = ok && dest[un] == T.out_pos[e];
            if (ok) {
              any = true;
              if (kind < 0 || blk[un] < best) best = blk[un], kind = 1, be = e, bun = un;
            }
          }
        }
      }
      if (q >= 0 && q_count[q] > 0) {
        const double at = q_t[static_cast<int64_t>(q) * T.QS + q_head[q]];
        any = true;
        if (kind < 0 || at < best) best = at, kind = 2;
      }
      if (!any) continue;
      double r;
      if (kind == 0) {
        r = rr_(be)[0];
        ring_pop(rt(be), T.R);
        ring_pop(rr_(be), T.R);
        count[be] -= 1;
      } else if (kind == 1) {
        r = rel[bun];
        set(bun, kIdle);
      } else {
        r = q_t[static_cast<int64_t>(q) * T.QS + q_head[q]];
        q_head[q] = (q_head[q] + 1) % T.QS;
        q_count[q] -= 1;
      }
      start(n, r);
    }
  }

  bool can_move() {
    // idle_any before anything (nothing changes while checking)
    for (int e = 0; e < T.B; ++e) {
      const int up = T.src[e], j = T.dst[e];
      const int32_t cap = capacity[e];
      const bool idle_j = idle_any(j);
      if (T.may_queue[e] && idle_j && cnt(e) > 0 && head_ready(e) <= t) return true;
      bool blocked = false;
      const int end = n_blocked[up] ? T.offset[up] + T.max_servers[up] : 0;
      for (int n = T.offset[up]; n < end && !blocked; ++n) {
        bool b = st[n] == kBlocked;
        if (T.keeps_dest[n]) b = b && dest[n] == T.out_pos[e];
        blocked = b;
      }
      if (!blocked) continue;
      bool rm = false;
      if (T.may_queue[e]) rm = rm || (cap > 0 && cnt(e) < cap);
      if (T.may_handoff[e]) rm = rm || (cap == 0 && idle_j);
      if (rm) return true;
    }
    for (int q = 0; q < T.Q; ++q) {
      if (q_count[q] > 0 && idle_any(T.src_station[q])) return true;
    }
    return false;
  }

  void transfer() {
    const int limit = 4 * T.S + 4;
    int k = 0;
    do {
      for (int i : T.order) {
        if (T.outs[i].empty()) {
          deliver(i);
        } else {
          push(i);
        }
        pull(i);
      }
      for (auto it = T.order.rbegin(); it != T.order.rend(); ++it) {
        if (T.single_pull[*it]) pull(*it);
      }
      ++k;
    } while (k <= limit && can_move());
  }

  // One step (engine._step_event, then the transfer phase).
  void step() {
    const int N = T.N;
    // the earliest event; candidates in the contract's order, the first earliest wins
    double t_ev = kInf;
    int kind = -1, who = -1;  // 0 completion, 1 failure, 2 repair, 3 arrival, 4 conveyor
    auto consider = [&](double x, int k, int w) {
      if (kind < 0 || x < t_ev) t_ev = x, kind = k, who = w;
    };
    for (int n = 0; n < N; ++n) consider(t_end[n], 0, n);
    for (int n = 0; n < N; ++n) {
      if (T.pos_f[n] >= 0) consider(t_fail[n], 1, n);
    }
    for (int n = 0; n < N; ++n) {
      if (T.pos_r[n] >= 0) consider(t_rep[n], 2, n);
    }
    for (int q = 0; q < T.Q; ++q) consider(next_arr[q], 3, q);
    for (int e = 0; e < T.B; ++e) {
      if (T.pos_v[e] < 0) continue;
      const double head = head_ready(e);
      consider(count[e] > 0 && head > *now ? head : kInf, 4, e);
    }
    const bool fire = t_ev <= horizon;
    t = std::min(t_ev, horizon);

    // statistics over (now, t] within the window
    const double dt = std::max(t, warmup) - std::max(*now, warmup);
    for (int n = 0; n < N; ++n) {
      const int32_t s = st[n];
      if (active[n] && s >= 0 && s < 4) acc[4 * n + s] += dt;
    }
    *wip_int = std::fma(dt, static_cast<double>(*wip), *wip_int);

    ctr = static_cast<uint32_t>(*n_events);
    in_window = t > warmup;
    if (fire) apply(kind, who);
    *now = fire ? t : std::nextafter(horizon, kInf);
    *n_events += fire ? 1 : 0;
    transfer();
  }

  void apply(int kind, int who) {
    const int N = T.N;
    if (kind == 0) {  // completion
      const int k = who, i = T.station[k];
      const double u1 = u(static_cast<uint32_t>(N));
      const bool scrapped_ = u1 < scrap[i];
      set(k, scrapped_ ? kIdle : kBlocked);
      if (T.keeps_blk[k] && !scrapped_) blk[k] = t;
      if (T.keeps_dest[k]) dest[k] = draw_dest(i, u(static_cast<uint32_t>(N + 1)));
      if (T.fmode[i] == kOperation) {
        ttf[k] = t_fail[k] - t;
        t_fail[k] = kInf;
      }
      t_end[k] = kInf;
      *completions += 1;
      if (in_window) (scrapped_ ? scrapped : produced)[i] += 1;
      if (scrapped_) *wip -= 1;
    } else if (kind == 1 || kind == 2) {
      const int k = who, i = T.station[k];
      const double e_n = -log_(1.0 - clip(u(static_cast<uint32_t>(N + 1)), 0.0, 1.0 - 1e-12));
      if (kind == 1) {  // failure
        prev[k] = st[k];
        if (st[k] == kBusy) rem[k] = t_end[k] - t;
        t_end[k] = kInf;
        set(k, kDown);
        t_fail[k] = kInf;
        t_rep[k] = std::fma(mttr[i], e_n, t);
      } else {  // repair
        const double new_ttf = mtbf[i] * e_n;
        const bool was_busy = prev[k] == kBusy;
        set(k, prev[k]);
        t_rep[k] = kInf;
        if (was_busy) t_end[k] = t + rem[k];
        if (T.fmode[i] == kTime || was_busy) t_fail[k] = std::fma(mtbf[i], e_n, t);
        if (T.fmode[i] == kOperation && !was_busy) ttf[k] = new_ttf;
      }
    } else if (kind == 3) {  // arrival at a timed source
      const int q = who;
      if (q_count[q] < T.QS) {
        const int32_t at = (q_head[q] + q_count[q]) % T.QS;
        q_t[static_cast<int64_t>(q) * T.QS + at] = t;
        q_count[q] += 1;
        *wip += 1;
      } else {
        *lost += 1;
      }
      if (T.src_kind[q] == kGamma) {
        double x;
        const TfKey key = fold_in(fold_in(gamma_key(), 7), 1000 + static_cast<uint32_t>(q));
        gamma_few(key, 1, ia_g + 4 * static_cast<int64_t>(q), &x);
        next_arr[q] = plus_gamma(t, x, ia_a[q], ia_b[q]);
      } else {
        next_arr[q] = plus_sample(t, T.src_kind[q], u(static_cast<uint32_t>(N)), ia_a[q],
                                  ia_b[q], ia_values + static_cast<int64_t>(q) * T.M,
                                  ia_nvalues[q]);
      }
    }
    // kind 4, a conveyor's head arriving: only the transfer phase moves it
  }

  // The destination drawn at a completion (probability routing): the weights' running sum.
  int32_t draw_dest(int i, double u2) const {
    const double* w = weights + static_cast<int64_t>(i) * T.W;
    double cdf[64];
    double sum = 0.0;
    for (int k = 0; k < T.W; ++k) cdf[k] = sum = sum + w[k];
    const double x = u2 * cdf[T.W - 1];
    int32_t draw = 0;
    for (int k = 0; k < T.W; ++k) draw += x >= cdf[k];
    return std::min(draw, T.W - 1);
  }

  void run(int32_t steps) {
    for (int32_t s = 0; s < steps && *now <= horizon; ++s) step();
  }
};

ffi::Error GeneralChunk(ffi::Buffer<ffi::S32> topo_b, ffi::Buffer<ffi::U32> key_b,
                        ffi::Buffer<ffi::F64> pf_b, ffi::Buffer<ffi::S32> pi_b,
                        ffi::Buffer<ffi::F64> edges_b, ffi::Buffer<ffi::S32> ctl_b,
                        ffi::Buffer<ffi::F64> sf_b, ffi::Buffer<ffi::S32> si_b,
                        ffi::Buffer<ffi::S32> hist_b, ffi::ResultBuffer<ffi::F64> sf_o,
                        ffi::ResultBuffer<ffi::S32> si_o, ffi::ResultBuffer<ffi::S32> hist_o) {
  const Topo T = read_topo(topo_b.typed_data(), static_cast<int64_t>(topo_b.element_count()));
  if (!T.ok) return ffi::Error::InvalidArgument("twin_general_chunk: malformed topology");
  if (T.W > 64) return ffi::Error::InvalidArgument("twin_general_chunk: over 64 outputs");
  for (int i = 0; i < T.S; ++i) {
    if (T.kind[i] < 0 || T.kind[i] > kEmpirical) {
      return ffi::Error::InvalidArgument("twin_general_chunk: unknown distribution family");
    }
    if (T.kind[i] == kGamma && T.max_servers[i] > kMaxFew) {
      return ffi::Error::InvalidArgument("twin_general_chunk: a gamma station over 8 servers");
    }
  }
  for (int q = 0; q < T.Q; ++q) {
    if (T.src_kind[q] < 0 || T.src_kind[q] > kEmpirical) {
      return ffi::Error::InvalidArgument("twin_general_chunk: unknown distribution family");
    }
  }
  const auto sd = sf_b.dimensions();
  const int64_t V = sd.size() == 2 ? sd[0] : -1;
  const int32_t bins = static_cast<int32_t>(edges_b.element_count()) - 1;
  if (V < 0 || sd[1] != T.F || si_b.dimensions()[0] != V || si_b.dimensions()[1] != T.I ||
      pf_b.dimensions()[0] != V || pf_b.dimensions()[1] != T.PF || pi_b.dimensions()[0] != V ||
      pi_b.dimensions()[1] != T.PI || key_b.element_count() != static_cast<size_t>(2 * V) ||
      hist_b.element_count() != static_cast<size_t>(V * bins) || bins < 1 ||
      ctl_b.element_count() != 2) {
    return ffi::Error::InvalidArgument(
        "twin_general_chunk: sf (V, F), si (V, I), pf (V, PF), pi (V, PI), key (V, 2), "
        "hist (V, bins), ctl (2) do not match the topology");
  }
  const int32_t steps = ctl_b.typed_data()[0];
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(ctl_b.typed_data()[1], V));
  double* sf = sf_o->typed_data();
  int32_t* si = si_o->typed_data();
  int32_t* hist = hist_o->typed_data();
  if (sf != sf_b.typed_data()) std::copy_n(sf_b.typed_data(), V * T.F, sf);
  if (si != si_b.typed_data()) std::copy_n(si_b.typed_data(), V * T.I, si);
  if (hist != hist_b.typed_data()) std::copy_n(hist_b.typed_data(), V * bins, hist);
  const double* pf = pf_b.typed_data();
  const int32_t* pi = pi_b.typed_data();
  const uint32_t* key = key_b.typed_data();
  const double* edges = edges_b.typed_data();
  auto work = [&](int64_t lo, int64_t hi) {
    for (int64_t v = lo; v < hi; ++v) {
      Lane lane(T, sf + v * T.F, si + v * T.I, pf + v * T.PF, pi + v * T.PI, key + 2 * v,
                hist + v * bins, edges, bins);
      lane.run(steps);
    }
  };
  if (threads == 1) {
    work(0, V);
  } else {
    std::vector<std::thread> pool;
    for (int64_t w = 0; w < threads; ++w) {
      pool.emplace_back(work, V * w / threads, V * (w + 1) / threads);
    }
    for (auto& th : pool) th.join();
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TwinGeneralChunk, GeneralChunk,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S32>>()  // topo
                                  .Arg<ffi::Buffer<ffi::U32>>()  // key
                                  .Arg<ffi::Buffer<ffi::F64>>()  // pf
                                  .Arg<ffi::Buffer<ffi::S32>>()  // pi
                                  .Arg<ffi::Buffer<ffi::F64>>()  // edges
                                  .Arg<ffi::Buffer<ffi::S32>>()  // ctl
                                  .Arg<ffi::Buffer<ffi::F64>>()  // sf
                                  .Arg<ffi::Buffer<ffi::S32>>()  // si
                                  .Arg<ffi::Buffer<ffi::S32>>()  // hist
                                  .Ret<ffi::Buffer<ffi::F64>>()  // sf
                                  .Ret<ffi::Buffer<ffi::S32>>()  // si
                                  .Ret<ffi::Buffer<ffi::S32>>());  // hist
