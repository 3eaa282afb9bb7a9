// Fused relative attention on a 2D grid, for the CPU: aug_attn/native.py builds and loads this file.
//
//   out_i = sum_j softmax_j(s_ij) v_j,   s_ij = q_i . k_j + a[i, y_j] + a[i, H + x_j]
//
// for the H x W pixels of a raster-ordered grid (key j = y_j * W + x_j), with the per-query factors
// a = [q . r^H gathered, q . r^W gathered] of Bello et al.'s relative logits (the encoder builds
// them; the clipping of offsets is in that gather). Per (batch, head) and block of R queries, the
// scores of all keys live in a per-thread buffer of R x N numbers: nothing of size N x N exists.
// The backward pass recomputes the scores from the saved log-sum-exp (as flash attention does) and
// returns the gradients of q, k, v and of the factors a (the two sums of dS over a row and a column
// of keys); autograd takes the factors' gradients on to q and the tables.
//
// Plain C++17, no PyTorch headers: loops written so that the compiler vectorizes them (fixed-size
// accumulator blocks, lane-wise partial sums, a polynomial exp), compiled with -O3 -march=native.
// Threads: OpenMP (-fopenmp) over (batch, head, query chunk) items, as many threads as the caller
// passes (torch.get_num_threads()); the results are bitwise the same for every thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int R = 4;  // query rows per block

// exp(x) for the x <= ~0 of a softmax: 2^n p(r), Cephes' expf polynomial (about 1 ulp); 0 below
// the float range (padding keys carry -1e30).
inline float fast_exp(float x) {
  const bool under = x < -87.3f;
  x = under ? -87.3f : x;
  const float t = x * 1.44269504088896341f + 12582912.0f;  // round to nearest by the 1.5 * 2^23 shift
  const float n = t - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return under ? 0.0f : p * scale;
}
inline double fast_exp(double x) { return std::exp(x); }

template <typename T>
constexpr int lanes() { return 64 / static_cast<int>(sizeof(T)); }  // one 512-bit register

template <typename T>
int64_t padded(int64_t n) { return (n + lanes<T>() - 1) / lanes<T>() * lanes<T>(); }

template <typename T>
struct Shape {
  int64_t N, d, dv, H, W;
};

// One (batch, head): keys and values transposed to (d, NP) and (dv, NP), NP = N rounded up to the
// lanes, padding columns zero; per block of R queries their rows of q, the bias and the scores.
template <typename T>
struct Work {
  Shape<T> s;
  int64_t NP;
  std::vector<T> KT, VT, bias, S, G, q, go;
  explicit Work(const Shape<T>& shape) : s(shape) {
    NP = padded<T>(s.N);
    KT.assign(s.d * NP, T(0));
    VT.assign(s.dv * NP, T(0));
    bias.assign(R * NP, T(0));
    S.assign(R * NP, T(0));
    G.assign(R * NP, T(0));
    q.assign(R * s.d, T(0));
    go.assign(R * s.dv, T(0));
  }

  void load_keys(const T* k, const T* v) {  // k (N, d), v (N, dv)
    for (int64_t j = 0; j < s.N; ++j) {
      for (int64_t c = 0; c < s.d; ++c) KT[c * NP + j] = k[j * s.d + c];
      for (int64_t e = 0; e < s.dv; ++e) VT[e * NP + j] = v[j * s.dv + e];
    }
  }

  // Queries [i0, i0 + rows): their q rows and bias rows a[i, y_j] + a[i, H + x_j]; the rows past
  // `rows` are zero, padding keys get -1e30 (no weight).
  void load_queries(const T* q_bh, const T* a_bh, int64_t i0, int rows) {
    const int64_t A = s.H + s.W;
    for (int r = 0; r < R; ++r) {
      T* b = bias.data() + r * NP;
      if (r < rows) {
        const T* ah = a_bh + (i0 + r) * A;
        const T* aw = ah + s.H;
        for (int64_t y = 0; y < s.H; ++y)
          for (int64_t x = 0; x < s.W; ++x) b[y * s.W + x] = ah[y] + aw[x];
        std::copy(q_bh + (i0 + r) * s.d, q_bh + (i0 + r + 1) * s.d, q.begin() + r * s.d);
      } else {
        std::fill(b, b + s.N, T(0));
        std::fill(q.begin() + r * s.d, q.begin() + (r + 1) * s.d, T(0));
      }
      std::fill(b + s.N, b + NP, T(-1e30));
    }
  }

  // S[r][:] = bias[r][:] + q_r . KT, two registers of keys by R rows of accumulators.
  void scores() {
    constexpr int L = lanes<T>();
    const int64_t d = s.d;
    for (int64_t jb = 0; jb < NP; jb += 2 * L) {
      T acc[R][2 * L];
      if (jb + L < NP) {
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < 2 * L; ++t) acc[r][t] = bias[r * NP + jb + t];
        for (int64_t c = 0; c < d; ++c) {
          const T* kt = KT.data() + c * NP + jb;
          for (int r = 0; r < R; ++r) {
            const T a = q[r * d + c];
            for (int t = 0; t < 2 * L; ++t) acc[r][t] += a * kt[t];
          }
        }
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < 2 * L; ++t) S[r * NP + jb + t] = acc[r][t];
      } else {  // the last single register of keys
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < L; ++t) acc[r][t] = bias[r * NP + jb + t];
        for (int64_t c = 0; c < d; ++c) {
          const T* kt = KT.data() + c * NP + jb;
          for (int r = 0; r < R; ++r) {
            const T a = q[r * d + c];
            for (int t = 0; t < L; ++t) acc[r][t] += a * kt[t];
          }
        }
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < L; ++t) S[r * NP + jb + t] = acc[r][t];
      }
    }
  }
};

template <typename T>
T dot(const T* a, const T* b, int64_t n) {  // n a multiple of the lanes
  constexpr int L = lanes<T>();
  T acc[L] = {};
  for (int64_t j = 0; j < n; j += L)
    for (int t = 0; t < L; ++t) acc[t] += a[j + t] * b[j + t];
  T sum = 0;
  for (int t = 0; t < L; ++t) sum += acc[t];
  return sum;
}

// out[r][c] = sum_j G[r][j] XT[c][j] for R rows and d columns, four columns at a time.
template <typename T>
void rows_times_transposed(const T* G, const T* XT, T* out, int64_t NP, int64_t d) {
  constexpr int L = lanes<T>();
  for (int64_t c0 = 0; c0 < d; c0 += 4) {
    const int nc = static_cast<int>(std::min<int64_t>(4, d - c0));
    T acc[R][4][L] = {};
    for (int64_t jb = 0; jb < NP; jb += L)
      for (int cc = 0; cc < nc; ++cc) {
        const T* xt = XT + (c0 + cc) * NP + jb;
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < L; ++t) acc[r][cc][t] += G[r * NP + jb + t] * xt[t];
      }
    for (int r = 0; r < R; ++r)
      for (int cc = 0; cc < nc; ++cc) {
        T sum = 0;
        for (int t = 0; t < L; ++t) sum += acc[r][cc][t];
        out[r * d + c0 + cc] = sum;
      }
  }
}

// XT[c][j] += sum_r a[r][c] G[r][j]: the R rows' outer products, accumulated transposed.
template <typename T>
void add_outer(const T* a, const T* G, T* XT, int64_t NP, int64_t d) {
  const T *g0 = G, *g1 = G + NP, *g2 = G + 2 * NP, *g3 = G + 3 * NP;
  static_assert(R == 4, "add_outer unrolls four rows");
  for (int64_t c = 0; c < d; ++c) {
    const T a0 = a[c], a1 = a[d + c], a2 = a[2 * d + c], a3 = a[3 * d + c];
    T* x = XT + c * NP;
    for (int64_t j = 0; j < NP; ++j) x[j] += a0 * g0[j] + a1 * g1[j] + a2 * g2[j] + a3 * g3[j];
  }
}

// Queries [i0, i0 + rows) of the pair whose keys are in w: out and lse (the forward pass).
template <typename T>
void forward_block(Work<T>& w, const T* q_bh, const T* a_bh, T* out_bh, T* lse_bh, int64_t i0) {
  constexpr int L = lanes<T>();
  const int64_t dv = w.s.dv, NP = w.NP;
  const int rows = static_cast<int>(std::min<int64_t>(R, w.s.N - i0));
  w.load_queries(q_bh, a_bh, i0, rows);
  w.scores();
  for (int r = 0; r < rows; ++r) {
    T* s = w.S.data() + r * NP;
    T top[L];
    for (int t = 0; t < L; ++t) top[t] = s[t];
    for (int64_t j = L; j < NP; j += L)
      for (int t = 0; t < L; ++t) top[t] = s[j + t] > top[t] ? s[j + t] : top[t];
    T m = top[0];
    for (int t = 1; t < L; ++t) m = top[t] > m ? top[t] : m;
    T part[L] = {};
    for (int64_t j = 0; j < NP; j += L)
      for (int t = 0; t < L; ++t) {
        const T p = fast_exp(s[j + t] - m);
        s[j + t] = p;
        part[t] += p;
      }
    T sum = 0;
    for (int t = 0; t < L; ++t) sum += part[t];
    const int64_t row = i0 + r;
    for (int64_t e = 0; e < dv; ++e) out_bh[row * dv + e] = dot(s, w.VT.data() + e * NP, NP) / sum;
    lse_bh[row] = m + std::log(sum);
  }
}

// Every output row depends on its own query row and all keys only, so the work is split into
// (pair, chunk of query blocks) items: more items than pairs where there are few pairs (batch-1
// inference), and the same numbers whatever the split.
template <typename T>
void forward(const T* q, const T* k, const T* v, const T* a, T* out, T* lse, int64_t BH, const Shape<T>& shape,
             int threads) {
  const int64_t N = shape.N, d = shape.d, dv = shape.dv, A = shape.H + shape.W;
  const int64_t blocks = (N + R - 1) / R;
  const int64_t wanted = std::max<int64_t>(1, (4 * static_cast<int64_t>(threads) + BH - 1) / BH);  // ~4 items a thread
  const int64_t chunk = (blocks + std::min(blocks, wanted) - 1) / std::min(blocks, wanted);        // blocks per item
  const int64_t per_pair = (blocks + chunk - 1) / chunk;
  const int64_t items = BH * per_pair;
#pragma omp parallel num_threads(threads) if (threads > 1 && items > 1)
  {
    Work<T> w(shape);
    int64_t loaded = -1;
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / per_pair, first = item % per_pair * chunk * R;
      if (b != loaded) {
        w.load_keys(k + b * N * d, v + b * N * dv);
        loaded = b;
      }
      for (int64_t i0 = first; i0 < std::min(N, first + chunk * R); i0 += R)
        forward_block(w, q + b * N * d, a + b * N * A, out + b * N * dv, lse + b * N, i0);
    }
  }
}

constexpr int64_t BACKWARD_ITEMS = 32;           // split queries where fewer (batch, head) pairs than this
constexpr int64_t BACKWARD_QUERIES = 128;        // at least so many queries per chunk (a multiple of R)
constexpr int64_t BACKWARD_BUFFER = int64_t(64) << 20;  // at most so many bytes of dK, dV partial sums

// The backward pass: dS = P * (dP - delta) with delta_i = dO_i . O_i - dLSE_i, recomputing P from
// the log-sum-exp. dQ and the factors' gradient are per query row; dK and dV sum over all queries.
// With many pairs each item is one pair, which writes its dK, dV itself. With few pairs (small
// batches) the queries are split into chunks too: each (pair, chunk) item keeps partial sums of dK,
// dV, added afterwards chunk after chunk in a fixed order. The chunks depend on the shapes only,
// never on the thread count, so the gradients are bitwise the same on any number of threads.
template <typename T>
void backward(const T* q, const T* k, const T* v, const T* a, const T* out, const T* lse, const T* grad_out,
              const T* grad_lse, T* grad_q, T* grad_k, T* grad_v, T* grad_a, int64_t BH, const Shape<T>& shape,
              int threads) {
  static_assert(BACKWARD_QUERIES % R == 0, "chunks of whole query blocks");
  const int64_t N = shape.N, d = shape.d, dv = shape.dv, H = shape.H, W = shape.W, A = H + W;
  const int64_t NP = padded<T>(N), per_item = (d + dv) * NP;
  const int64_t fits = BACKWARD_BUFFER / static_cast<int64_t>(sizeof(T) * BH * per_item);
  const int64_t chunks = std::max<int64_t>(
      1, std::min({(BACKWARD_ITEMS + BH - 1) / BH, (N + BACKWARD_QUERIES - 1) / BACKWARD_QUERIES, fits}));
  const int64_t chunk = ((N + chunks - 1) / chunks + R - 1) / R * R;  // queries per chunk
  const int64_t items = BH * chunks;
  std::vector<T> partial(chunks > 1 ? items * per_item : 0);
#pragma omp parallel num_threads(threads) if (threads > 1 && items > 1)
  {
    Work<T> w(shape);
    std::vector<T> gq(R * d), GKT(d * NP), GVT(dv * NP);
    int64_t loaded = -1;
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / chunks, first = item % chunks * chunk;
      std::fill(GKT.begin(), GKT.end(), T(0));
      std::fill(GVT.begin(), GVT.end(), T(0));
      if (b != loaded) {
        w.load_keys(k + b * N * d, v + b * N * dv);
        loaded = b;
      }
      for (int64_t i0 = first; i0 < std::min(N, first + chunk); i0 += R) {
        const int rows = static_cast<int>(std::min<int64_t>(R, N - i0));
        w.load_queries(q + b * N * d, a + b * N * A, i0, rows);
        w.scores();
        for (int r = 0; r < R; ++r) {
          T* p = w.S.data() + r * NP;  // becomes the probabilities P
          T* g = w.G.data() + r * NP;  // becomes dS = P * (dP - delta)
          const int64_t row = b * N + i0 + r;
          if (r >= rows) {  // padding rows: no probabilities, no gradient
            std::fill(p, p + NP, T(0));
            std::fill(g, g + NP, T(0));
            std::fill(w.go.begin() + r * dv, w.go.begin() + (r + 1) * dv, T(0));
            continue;
          }
          const T l = lse[row];
          T delta = grad_lse ? -grad_lse[row] : T(0);
          for (int64_t e = 0; e < dv; ++e) {
            w.go[r * dv + e] = grad_out[row * dv + e];
            delta += grad_out[row * dv + e] * out[row * dv + e];
          }
          for (int64_t j = 0; j < NP; ++j) p[j] = fast_exp(p[j] - l);
          std::fill(g, g + NP, -delta);
          for (int64_t e = 0; e < dv; ++e) {
            const T ge = w.go[r * dv + e];
            const T* vt = w.VT.data() + e * NP;
            for (int64_t j = 0; j < NP; ++j) g[j] += ge * vt[j];
          }
          for (int64_t j = 0; j < NP; ++j) g[j] *= p[j];
          T* gh = grad_a + row * A;  // sum of dS over each key row ...
          T* gw = gh + H;            // ... and over each key column
          std::fill(gw, gw + W, T(0));
          for (int64_t y = 0; y < H; ++y) {
            const T* gy = g + y * W;
            T sum = 0;
            for (int64_t x = 0; x < W; ++x) {
              sum += gy[x];
              gw[x] += gy[x];
            }
            gh[y] = sum;
          }
        }
        rows_times_transposed(w.G.data(), w.KT.data(), gq.data(), NP, d);  // dQ = dS K
        for (int r = 0; r < rows; ++r)
          std::copy(gq.begin() + r * d, gq.begin() + (r + 1) * d, grad_q + (b * N + i0 + r) * d);
        add_outer(w.q.data(), w.G.data(), GKT.data(), NP, d);    // dK += dS^T Q
        add_outer(w.go.data(), w.S.data(), GVT.data(), NP, dv);  // dV += P^T dO
      }
      if (chunks == 1) {
        for (int64_t j = 0; j < N; ++j) {
          for (int64_t c = 0; c < d; ++c) grad_k[(b * N + j) * d + c] = GKT[c * NP + j];
          for (int64_t e = 0; e < dv; ++e) grad_v[(b * N + j) * dv + e] = GVT[e * NP + j];
        }
      } else {
        std::copy(GKT.begin(), GKT.end(), partial.begin() + item * per_item);
        std::copy(GVT.begin(), GVT.end(), partial.begin() + item * per_item + d * NP);
      }
    }
    if (chunks > 1) {
#pragma omp for schedule(static)
      for (int64_t b = 0; b < BH; ++b) {  // dK, dV: the chunks' partial sums, in chunk order
        const T* sums = partial.data() + b * chunks * per_item;
        for (int64_t j = 0; j < N; ++j)
          for (int64_t c = 0; c < d + dv; ++c) {
            T sum = sums[c * NP + j];
            for (int64_t i = 1; i < chunks; ++i) sum += sums[i * per_item + c * NP + j];
            if (c < d)
              grad_k[(b * N + j) * d + c] = sum;
            else
              grad_v[(b * N + j) * dv + c - d] = sum;
          }
      }
    }
  }
}

}  // namespace

// The C interface (ctypes): contiguous arrays q/k (BH, N, d), v (BH, N, dv), a (BH, N, H + W),
// out (BH, N, dv), lse (BH, N), grad_lse (BH, N) or null (zero); `threads` OpenMP threads (one
// where the library was built without OpenMP: grid_attention_openmp() says which).
extern "C" {
#define AUG_ATTN_DEFINE(T, NAME)                                                                                    \
  void NAME##_forward(const T* q, const T* k, const T* v, const T* a, T* out, T* lse, int64_t BH, int64_t N,        \
                      int64_t d, int64_t dv, int64_t H, int64_t W, int64_t threads) {                              \
    forward<T>(q, k, v, a, out, lse, BH, Shape<T>{N, d, dv, H, W}, static_cast<int>(std::max<int64_t>(1, threads))); \
  }                                                                                                                 \
  void NAME##_backward(const T* q, const T* k, const T* v, const T* a, const T* out, const T* lse,                  \
                       const T* grad_out, const T* grad_lse, T* grad_q, T* grad_k, T* grad_v, T* grad_a, int64_t BH, \
                       int64_t N, int64_t d, int64_t dv, int64_t H, int64_t W, int64_t threads) {                  \
    backward<T>(q, k, v, a, out, lse, grad_out, grad_lse, grad_q, grad_k, grad_v, grad_a, BH,                       \
                Shape<T>{N, d, dv, H, W}, static_cast<int>(std::max<int64_t>(1, threads)));                        \
  }
AUG_ATTN_DEFINE(float, grid_attention_f32)
AUG_ATTN_DEFINE(double, grid_attention_f64)
#undef AUG_ATTN_DEFINE

int grid_attention_abi_version() { return 2; }

int grid_attention_openmp() {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}
}
