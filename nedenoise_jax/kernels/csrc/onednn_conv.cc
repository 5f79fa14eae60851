// XLA FFI handlers for float32 2-D convolutions on the CPU through oneDNN,
// and for the normalization-equivariant SortPool.
//
// Three handlers, NHWC activations and HWIO kernels as in nedenoise_jax.ops:
//   nedenoise_conv_fwd:        y  = conv(x, w)
//   nedenoise_conv_bwd_data:   dx = d conv / dx applied to dy
//   nedenoise_conv_bwd_weights dw = d conv / dw applied to dy
// Attributes: stride, pad_top, pad_bottom, pad_left, pad_right (XLA's
// explicit padding, non-negative) and threads (OpenMP threads per call).
// nedenoise_rconv_{fwd,bwd_data,bwd_weights} take the same pads as reflect
// padding, done here into a working buffer: no padded copy of the input is
// made or kept by XLA, and the input gradient's fold of the padding runs on
// every core.
// nedenoise_srconv_{fwd,bwd_data,bwd_weights}: nedenoise_rconv_* of
// SortPool(x), sorted while padding (the input gradient permuted while the
// padding is folded back; z is then a third argument).
// nedenoise_sortpool_{fwd,permute}: SortPool and the permutation it applies
// (its own gradient). Every sort is SortPool of adjacent channel pairs
// (2k, 2k+1), the paper's order.
// nedenoise_scale_grad: the gradient of alpha*x + y for x and alpha
// (nedenoise_jax.ops.scale_add).
// nedenoise_mconv_{fwd,bwd_data,bwd_weights}: nedenoise_rconv_* (or with an
// attribute sort, nedenoise_srconv_*) of the kernel scale * A(theta), A the
// affine map of nedenoise_jax.ops.affine_kernel ("centre"), formed here
// from the parameters theta and a scalar scale while they are in cache: no
// kernel is written out by XLA, and the kernel gradient comes back as the
// gradients of theta and scale.
//
// A primitive is created once per shape and kept for the life of the process;
// the kernel is reordered from HWIO into the layout the primitive prefers on
// every call (small against the convolution). Scratchpad, reordered kernel
// and padded image live in per-thread buffers kept between calls, so calls
// from several XLA threads at once are safe.

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

// N, H, W, C (input), KH, KW, O, stride, 4 pads, threads, kind.
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int>;

// Where a kernel's entries are: (o, i, h, w) at col[o] + row[(h * kw + w) *
// c + i], in HWIO or in a layout of oneDNN's (whose offsets add up over the
// dimensions, blocked or not).
struct KernelAddress {
  std::vector<int64_t> col, row;
};

KernelAddress DescAddress(const dnnl::memory::desc& md, int64_t kh, int64_t kw, int64_t c, int64_t o);

struct Entry {
  dnnl::primitive prim;
  dnnl::memory::desc src, weights, dst, user_weights, scratch;
  bool reorder_weights = false;
  dnnl::reorder weights_reorder;  // user HWIO -> prim (fwd, bwd data) or prim -> HWIO (bwd weights)
  KernelAddress address;          // of the primitive's kernel layout (fwd, bwd data, when reordered)
};

dnnl::engine& Engine() {
  static dnnl::engine* eng = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *eng;
}

std::mutex& CacheMutex() {
  static std::mutex* mu = new std::mutex();
  return *mu;
}

std::map<Key, std::shared_ptr<Entry>>& Cache() {
  static auto* cache = new std::map<Key, std::shared_ptr<Entry>>();
  return *cache;
}

// Convolutions running at once, each on `threads` OpenMP threads, are limited
// to the cores this process may use: XLA runs independent thunks
// concurrently, and two oneDNN calls on two OpenMP teams sharing the same
// cores slow each other down far more than running one after the other.
class CoreSlots {
 public:
  void Acquire(int64_t threads) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t need = std::min<int64_t>(std::max<int64_t>(threads, 1), cores_);
    cv_.wait(lock, [&] { return used_ + need <= cores_; });
    used_ += need;
  }
  void Release(int64_t threads) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      used_ -= std::min<int64_t>(std::max<int64_t>(threads, 1), cores_);
    }
    cv_.notify_all();
  }

 private:
  static int64_t Cores() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return 1;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t used_ = 0;
  const int64_t cores_ = Cores();
};

CoreSlots& Slots() {
  static CoreSlots* slots = new CoreSlots();
  return *slots;
}

struct SlotGuard {
  explicit SlotGuard(int64_t threads) : threads(threads) { Slots().Acquire(threads); }
  ~SlotGuard() { Slots().Release(threads); }
  int64_t threads;
};

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

std::shared_ptr<Entry> MakeEntry(const Key& k) {
  auto [n, h, w, c, kh, kw, o, s, pt, pb, pl, pr, threads, kind] = k;
  const int64_t oh = (h + pt + pb - kh) / s + 1, ow = (w + pl + pr - kw) / s + 1;
  dnnl::engine& eng = Engine();
  dnnl::memory::desc src({n, c, h, w}, dt::f32, tag::nhwc);
  dnnl::memory::desc dst({n, o, oh, ow}, dt::f32, tag::nhwc);
  dnnl::memory::desc user_w({o, c, kh, kw}, dt::f32, tag::hwio);
  dnnl::memory::desc any_w({o, c, kh, kw}, dt::f32, tag::any);
  dnnl::memory::dims strides{s, s}, pad_l{pt, pl}, pad_r{pb, pr};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, any_w, dst,
      strides, pad_l, pad_r, attr);
  auto e = std::make_shared<Entry>();
  e->src = src;
  e->dst = dst;
  e->user_weights = user_w;
  if (kind == kFwd) {
    e->weights = fwd.weights_desc();
    e->scratch = fwd.scratchpad_desc();
    e->prim = dnnl::convolution_forward(fwd);
  } else if (kind == kBwdData) {
    auto bwd = dnnl::convolution_backward_data::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src, any_w, dst, strides, pad_l, pad_r, fwd, attr);
    e->weights = bwd.weights_desc();
    e->scratch = bwd.scratchpad_desc();
    e->prim = dnnl::convolution_backward_data(bwd);
  } else {
    auto bwd = dnnl::convolution_backward_weights::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src, any_w, dst, strides, pad_l, pad_r, fwd, attr);
    e->weights = bwd.diff_weights_desc();
    e->scratch = bwd.scratchpad_desc();
    e->prim = dnnl::convolution_backward_weights(bwd);
  }
  e->reorder_weights = e->weights != user_w;
  if (e->reorder_weights) {
    e->weights_reorder = kind == kBwdWeights ? dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->weights, eng, user_w))
                                             : dnnl::reorder(dnnl::reorder::primitive_desc(eng, user_w, eng, e->weights));
    if (kind != kBwdWeights) e->address = DescAddress(e->weights, kh, kw, c, o);
  }
  return e;
}

std::shared_ptr<Entry> Lookup(const Key& k) {
  {
    std::lock_guard<std::mutex> lock(CacheMutex());
    auto it = Cache().find(k);
    if (it != Cache().end()) return it->second;
  }
  auto e = MakeEntry(k);  // outside the lock: creation can take milliseconds
  std::lock_guard<std::mutex> lock(CacheMutex());
  return Cache().emplace(k, e).first->second;
}

// Working memory kept per thread and reused from call to call: a block of
// this size freshly obtained from malloc is a new mmap region whose pages
// fault in one by one on every call (a sort-pool-and-convolution pair on a
// 17 MB image took 18.5 ms with fresh blocks, 12.3 ms with kept ones), and
// XLA calls these handlers hundreds of times per training step. A thread
// keeps at most three blocks of up to kKeepLimit each; larger ones are
// released after the call.
constexpr size_t kKeepLimit = size_t{128} << 20;

class Buffer {
 public:
  char* Get(size_t bytes) {
    if (bytes > kKeepLimit) {
      once_.reset(new char[bytes + 64]);
      return Align(once_.get());
    }
    if (bytes > size_) {
      kept_.reset(new char[bytes + 64]);
      size_ = bytes;
    }
    return Align(kept_.get());
  }
  void ReleaseOnce() { once_.reset(); }

 private:
  static char* Align(char* p) {
    return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
  }
  std::unique_ptr<char[]> kept_, once_;
  size_t size_ = 0;
};

struct WorkBuffers {
  Buffer pad, weights, scratch, kernel;
};

// Returns the calling thread's buffers; blocks above kKeepLimit are freed
// when the guard goes out of scope.
struct WorkGuard {
  WorkBuffers& b;
  WorkGuard() : b(Mine()) {}
  ~WorkGuard() {
    b.pad.ReleaseOnce();
    b.weights.ReleaseOnce();
    b.scratch.ReleaseOnce();
    b.kernel.ReleaseOnce();
  }
  static WorkBuffers& Mine() {
    thread_local WorkBuffers buffers;
    return buffers;
  }
};

// Source index of position i (in [-before, n + after)) of an axis of size n,
// reflect-padded: the edge pixel is not repeated, wider pads reflect back and
// forth, a 1-pixel axis is repeated (nedenoise_jax.ops.reflect_indices).
int64_t ReflectIndex(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  const int64_t m = ((i % period) + period) % period;
  return m >= n ? period - m : m;
}

// SortPool of one pixel's c channels: each pair of adjacent channels
// (2k, 2k+1) becomes (min, max), a permutation of it (a NaN stays in one of
// the two).
inline void SortPixel(const float* __restrict a, float* __restrict out, int64_t c) {
  const int64_t half = c / 2;
#pragma omp simd
  for (int64_t k = 0; k < half; ++k) {
    const float p = a[2 * k], q = a[2 * k + 1];
    const bool keep = p <= q;
    out[2 * k] = keep ? p : q;
    out[2 * k + 1] = keep ? q : p;
  }
}

// out = v with each pair (as in SortPixel) swapped where a's pair is out of
// order (not first <= second): the permutation SortPixel applies to a, which
// is its own transpose, so also the gradient of the sort.
inline void PermutePixel(const float* __restrict a, const float* __restrict v, float* __restrict out,
                         int64_t c) {
  const int64_t half = c / 2;
#pragma omp simd
  for (int64_t k = 0; k < half; ++k) {
    const int64_t i = 2 * k, j = i + 1;
    const bool keep = a[i] <= a[j];
    const float p = v[i], q = v[j];
    out[i] = keep ? p : q;
    out[j] = keep ? q : p;
  }
}

// Sorting modes of ReflectPad, ReflectFold and Run (the mconv handlers' sort attribute;
// 1 was an order of the channels no model used, since removed).
enum SortMode { kNoSort = 0, kSortPairs = 2 };

// dst (n, h + pt + pb, w + pl + pr, c) = reflect padding of src (n, h, w, c),
// with kSortPairs: of SortPool(src).
void ReflectPad(const float* src, float* dst, int64_t n, int64_t h, int64_t w, int64_t c, int64_t pt,
                int64_t pb, int64_t pl, int64_t pr, int threads, SortMode sort = kNoSort) {
  const int64_t hp = h + pt + pb, wp = w + pl + pr;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t r = 0; r < hp; ++r) {
      const float* srow = src + (b * h + ReflectIndex(r - pt, h)) * w * c;
      float* drow = dst + (b * hp + r) * wp * c;
      float* inner = drow + pl * c;
      if (sort != kNoSort) {
        for (int64_t q = 0; q < w; ++q) SortPixel(srow + q * c, inner + q * c, c);
      } else {
        std::memcpy(inner, srow, sizeof(float) * w * c);
      }
      for (int64_t q = 0; q < wp; ++q) {  // the border columns, from the row just written
        if (q == pl) q = pl + w;
        if (q >= wp) break;
        std::memcpy(drow + q * c, inner + ReflectIndex(q - pl, w) * c, sizeof(float) * c);
      }
    }
  }
}

inline void AddTo(float* __restrict d, const float* __restrict s, int64_t c) {
#pragma omp simd
  for (int64_t k = 0; k < c; ++k) d[k] += s[k];
}

// The transpose of ReflectPad: dst (n, h, w, c) = each pixel's sum over the
// padded positions copied from it, in a fixed order (deterministic). With
// kSortPairs, each pixel of the result is then permuted as
// SortPool permutes the same pixel of sort_ref (n, h, w, c): the transpose of
// ReflectPad with that sort.
void ReflectFold(const float* src, float* dst, int64_t n, int64_t h, int64_t w, int64_t c, int64_t pt,
                 int64_t pb, int64_t pl, int64_t pr, int threads, SortMode sort = kNoSort,
                 const float* sort_ref = nullptr) {
  const int64_t hp = h + pt + pb, wp = w + pl + pr;
  std::vector<std::vector<int64_t>> extra_rows(h);  // padded rows besides the interior one
  for (int64_t r = 0; r < hp; ++r) {
    if (r < pt || r >= pt + h) extra_rows[ReflectIndex(r - pt, h)].push_back(r);
  }
  std::vector<int64_t> col_src(wp);
  for (int64_t q = 0; q < wp; ++q) col_src[q] = ReflectIndex(q - pl, w);
#pragma omp parallel num_threads(threads)
  {
    // With a sort, each row is summed here and permuted into dst (an
    // in-place permutation did not vectorize).
    std::vector<float> row_buf(sort != kNoSort ? w * c : 0);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t r = 0; r < h; ++r) {
        float* out_row = dst + (b * h + r) * w * c;
        float* drow = sort != kNoSort ? row_buf.data() : out_row;
        const float* srow = src + (b * hp + r + pt) * wp * c;
        std::memcpy(drow, srow + pl * c, sizeof(float) * w * c);
        for (int64_t q = 0; q < wp; ++q) {
          if (q == pl) q = pl + w;
          if (q >= wp) break;
          AddTo(drow + col_src[q] * c, srow + q * c, c);
        }
        for (int64_t pr_row : extra_rows[r]) {
          const float* xrow = src + (b * hp + pr_row) * wp * c;
          for (int64_t q = 0; q < wp; ++q) AddTo(drow + col_src[q] * c, xrow + q * c, c);
        }
        if (sort == kNoSort) continue;
        const float* zrow = sort_ref + (b * h + r) * w * c;
        for (int64_t q = 0; q < w; ++q) PermutePixel(zrow + q * c, drow + q * c, out_row + q * c, c);
      }
    }
  }
}

// The kernel map of the nedenoise_mconv_* handlers: K = scale * A(theta) for
// HWIO theta (kh, kw, c, o), where A(theta) equals theta except at the anchor
// tap (ah, aw) of input channel 0, which is total minus the sum of the
// filter's other entries over the first n_con input channels (the rest are
// free). dscale, for the kernel gradient, receives the gradient of scale.
struct KernelMap {
  int64_t ah, aw, n_con;
  float total, scale;
  float* dscale;
};

// The columns (output channels) [lo, hi) of thread t of nt: every loop over
// a kernel below gives each thread the same columns of every row, so the
// sums of a column run in a fixed order.
inline void Columns(int64_t o, int t, int nt, int64_t* lo, int64_t* hi) {
  *lo = o * t / nt;
  *hi = o * (t + 1) / nt;
}

// The offset of the logical element (d0, d1, d2, d3) in memory of desc md
// (plain or blocked, as oneDNN describes it: outer strides, then the inner
// blocks from the outermost).
int64_t ElementOffset(const dnnl::memory::desc& md, const int64_t idx[4]) {
  const dnnl::memory::dims strides = md.get_strides(), blks = md.get_inner_blks(),
                           bidx = md.get_inner_idxs();
  const int nblks = md.get_inner_nblks();
  int64_t block[4] = {1, 1, 1, 1};
  for (int k = 0; k < nblks; ++k) block[bidx[k]] *= blks[k];
  int64_t off = 0, rem[4], size[4];
  for (int d = 0; d < 4; ++d) {
    off += (idx[d] / block[d]) * strides[d];
    rem[d] = idx[d] % block[d];
    size[d] = block[d];
  }
  int64_t inner = 0;
  for (int k = 0; k < nblks; ++k) {
    const int64_t d = bidx[k];
    size[d] /= blks[k];
    inner = inner * blks[k] + rem[d] / size[d];
    rem[d] %= size[d];
  }
  return off + inner;
}

KernelAddress HwioAddress(int64_t kh, int64_t kw, int64_t c, int64_t o) {
  KernelAddress a{std::vector<int64_t>(o), std::vector<int64_t>(kh * kw * c)};
  for (int64_t j = 0; j < o; ++j) a.col[j] = j;
  for (int64_t r = 0; r < kh * kw * c; ++r) a.row[r] = r * o;
  return a;
}

KernelAddress DescAddress(const dnnl::memory::desc& md, int64_t kh, int64_t kw, int64_t c, int64_t o) {
  KernelAddress a{std::vector<int64_t>(o), std::vector<int64_t>(kh * kw * c)};
  for (int64_t j = 0; j < o; ++j) {
    const int64_t idx[4] = {j, 0, 0, 0};
    a.col[j] = ElementOffset(md, idx);
  }
  for (int64_t h = 0; h < kh; ++h) {
    for (int64_t w = 0; w < kw; ++w) {
      for (int64_t i = 0; i < c; ++i) {
        const int64_t idx[4] = {0, i, h, w};
        a.row[(h * kw + w) * c + i] = ElementOffset(md, idx);
      }
    }
  }
  return a;
}

// Sums of float blocks of kRowBlock rows are added in double.
constexpr int64_t kRowBlock = 64;

// anchors[j] = scale * A(theta)[ah, aw, 0, j], for each output channel j: one
// pass reading theta, laid out as `at` says. The sums run in the same order
// for every layout, so the anchors do not depend on it.
void AnchorValues(const float* theta, const KernelAddress& at, float* anchors, int64_t kh, int64_t kw,
                  int64_t c, int64_t o, const KernelMap& m, int threads) {
  const int64_t rows = kh * kw * c, anchor = (m.ah * kw + m.aw) * c;
#pragma omp parallel num_threads(threads)
  {
    int64_t lo, hi;
    Columns(o, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
    // The thread's columns as runs that are contiguous in memory.
    std::vector<std::pair<int64_t, int64_t>> runs;  // (first column, length)
    for (int64_t j = lo; j < hi;) {
      int64_t len = 1;
      while (j + len < hi && at.col[j + len] == at.col[j] + len) ++len;
      runs.emplace_back(j, len);
      j += len;
    }
    std::vector<double> sums(hi - lo, 0.0);
    std::vector<float> block(hi - lo, 0.0f);
    double* acc = sums.data() - lo;
    float* part = block.data() - lo;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
      for (int64_t r = r0; r < std::min(rows, r0 + kRowBlock); ++r) {
        if (r == anchor || r % c >= m.n_con) continue;
        for (const auto& [j0, len] : runs) {
          const float* t = theta + at.row[r] + at.col[j0];
          float* p = part + j0;
#pragma omp simd
          for (int64_t q = 0; q < len; ++q) p[q] += t[q];
        }
      }
      for (int64_t j = lo; j < hi; ++j) {
        acc[j] += part[j];
        part[j] = 0.0f;
      }
    }
    for (int64_t j = lo; j < hi; ++j) anchors[j] = m.scale * static_cast<float>(m.total - acc[j]);
  }
}

// out (HWIO) = scale * A(theta), given AnchorValues.
void MapKernel(const float* theta, const float* anchors, float* out, int64_t kh, int64_t kw, int64_t c,
               int64_t o, const KernelMap& m, int threads) {
  const int64_t n = kh * kw * c * o, anchor = (m.ah * kw + m.aw) * c;
  const float s = m.scale;
#pragma omp parallel for simd schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) out[i] = s * theta[i];
  std::memcpy(out + anchor * o, anchors, sizeof(float) * o);
}

// The transpose of MapKernel's map at theta, in place on the kernel gradient
// g = dL/dK (HWIO): g becomes dL/dtheta = scale * (g - g[anchor] over the
// constrained entries, 0 at the anchor, g over the free ones), and
// *m.dscale = dL/dscale = sum(g * A(theta)). One pass over g and theta.
void UnmapKernelGrad(float* g, const float* theta, int64_t kh, int64_t kw, int64_t c, int64_t o,
                     const KernelMap& m, int threads) {
  const int64_t rows = kh * kw * c, anchor = (m.ah * kw + m.aw) * c;
  const float s = m.scale;
  std::vector<double> partial(threads, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    int64_t lo, hi;
    Columns(o, t, omp_get_num_threads(), &lo, &hi);
    std::vector<double> sums(hi - lo, 0.0);
    std::vector<float> block(hi - lo, 0.0f);
    std::vector<float> anchor_g(g + anchor * o + lo, g + anchor * o + hi);
    double* acc = sums.data() - lo;
    float* part = block.data() - lo;
    const float* ga = anchor_g.data() - lo;
    double dot = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      if (r % kRowBlock == 0 && r) {
        for (int64_t j = lo; j < hi; ++j) {
          acc[j] += part[j];
          part[j] = 0.0f;
        }
      }
      if (r == anchor) continue;
      const float* th = theta + r * o;
      float* gr = g + r * o;
      float row_dot = 0.0f;
      if (r % c < m.n_con) {
#pragma omp simd reduction(+ : row_dot)
        for (int64_t j = lo; j < hi; ++j) {
          row_dot += gr[j] * th[j];
          part[j] += th[j];
          gr[j] = s * (gr[j] - ga[j]);
        }
      } else {
#pragma omp simd reduction(+ : row_dot)
        for (int64_t j = lo; j < hi; ++j) {
          row_dot += gr[j] * th[j];
          gr[j] = s * gr[j];
        }
      }
      dot += row_dot;
    }
    for (int64_t j = lo; j < hi; ++j) {
      acc[j] += part[j];
      dot += static_cast<double>(ga[j]) * (m.total - acc[j]);
      g[anchor * o + j] = 0.0f;
    }
    partial[t] = dot;
  }
  double total = 0.0;
  for (double v : partial) total += v;
  *m.dscale = static_cast<float>(total);
}

// With reflect, (pt, pb, pl, pr) are reflect pads done here: the primitive
// sees the padded image (n, h + pt + pb, w + pl + pr, c) without padding of
// its own, held in a working buffer: the padded input (forward, kernel
// gradient) or the padded input gradient, folded back into src_ptr.
ffi::Error Run(int kind, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, int64_t o,
               int64_t stride, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads,
               void* src_ptr, void* weights_ptr, void* dst_ptr, bool reflect = false,
               SortMode sort_input = kNoSort, const float* sort_ref = nullptr,
               const KernelMap* kmap = nullptr, const float* theta = nullptr) {
  if (stride < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0 || h + pt + pb < kh || w + pl + pr < kw) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "onednn_conv: unsupported stride or padding");
  }
  const int nthreads = static_cast<int>(std::max<int64_t>(threads, 1));
  try {
    if (threads > 0) omp_set_num_threads(nthreads);
    const int64_t hp = reflect ? h + pt + pb : h, wp = reflect ? w + pl + pr : w;
    const Key key = reflect ? Key{n, hp, wp, c, kh, kw, o, stride, 0, 0, 0, 0, threads, kind}
                            : Key{n, h, w, c, kh, kw, o, stride, pt, pb, pl, pr, threads, kind};
    auto e = Lookup(key);
    dnnl::engine& eng = Engine();
    thread_local dnnl::stream strm(Engine());
    WorkGuard work;
    SlotGuard slot(threads);  // held until the stream is done
    void* prim_src = src_ptr;
    float* pad_buf = nullptr;
    if (reflect) {
      pad_buf = reinterpret_cast<float*>(work.b.pad.Get(sizeof(float) * n * hp * wp * c));
      prim_src = pad_buf;
      if (kind != kBwdData) {
        ReflectPad(static_cast<const float*>(src_ptr), pad_buf, n, h, w, c, pt, pb, pl, pr, nthreads,
                   sort_input);
      }
    }
    dnnl::memory src(e->src, eng, prim_src), dst(e->dst, eng, dst_ptr);
    // With kmap (forward, input gradient) weights_ptr holds theta: the
    // kernel is formed here. Reordered into the primitive's layout, the
    // anchors are summed from the reordered copy while it is in cache, which
    // is then scaled; or formed in HWIO.
    const bool map_kernel = kmap && kind != kBwdWeights;
    std::vector<float> anchors(map_kernel ? o : 0);
    void* user_w_ptr = weights_ptr;
    if (map_kernel && !e->reorder_weights) {
      AnchorValues(static_cast<const float*>(weights_ptr), HwioAddress(kh, kw, c, o), anchors.data(), kh,
                   kw, c, o, *kmap, nthreads);
      user_w_ptr = work.b.kernel.Get(sizeof(float) * kh * kw * c * o);
      MapKernel(static_cast<const float*>(weights_ptr), anchors.data(), static_cast<float*>(user_w_ptr), kh,
                kw, c, o, *kmap, nthreads);
    }
    dnnl::memory user_w(e->user_weights, eng, user_w_ptr);
    dnnl::memory prim_w = user_w;
    // Uninitialized buffers: every byte is written before it is read.
    if (e->reorder_weights) {
      prim_w = dnnl::memory(e->weights, eng, work.b.weights.Get(e->weights.get_size()));
      if (kind != kBwdWeights) e->weights_reorder.execute(strm, user_w, prim_w);
      if (map_kernel) {
        strm.wait();
        float* pw = static_cast<float*>(prim_w.get_data_handle());
        AnchorValues(pw, e->address, anchors.data(), kh, kw, c, o, *kmap, nthreads);
        if (kmap->scale != 1.0f) {
          const int64_t n = e->weights.get_size() / sizeof(float);
          const float scale = kmap->scale;
#pragma omp parallel for simd schedule(static) num_threads(nthreads)
          for (int64_t i = 0; i < n; ++i) pw[i] *= scale;
        }
        const int64_t anchor_row = e->address.row[(kmap->ah * kw + kmap->aw) * c];
        for (int64_t j = 0; j < o; ++j) pw[e->address.col[j] + anchor_row] = anchors[j];
      }
    }
    dnnl::memory scratch(e->scratch, eng, work.b.scratch.Get(e->scratch.get_size() + 1));
    if (kind == kFwd) {
      e->prim.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w}, {DNNL_ARG_DST, dst},
                             {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (kind == kBwdData) {
      e->prim.execute(strm, {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w},
                             {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      e->prim.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, prim_w},
                             {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (e->reorder_weights) e->weights_reorder.execute(strm, prim_w, user_w);
    }
    strm.wait();
    if (kmap && kind == kBwdWeights) {
      UnmapKernelGrad(static_cast<float*>(weights_ptr), theta, kh, kw, c, o, *kmap, nthreads);
    }
    if (reflect && kind == kBwdData) {
      ReflectFold(pad_buf, static_cast<float*>(src_ptr), n, h, w, c, pt, pb, pl, pr, nthreads, sort_input,
                  sort_ref);
    }
  } catch (const dnnl::error& err) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("onednn_conv: ") + err.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;

#define NEDENOISE_ATTRS(binding)                                                             \
  binding.Attr<int64_t>("stride").Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom")       \
      .Attr<int64_t>("pad_left").Attr<int64_t>("pad_right").Attr<int64_t>("threads")

ffi::Error BadShapes(const char* what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, std::string("onednn_conv: ") + what);
}

bool ConvShapes(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> kd) {
  return xd.size() == 4 && kd.size() == 4 && xd[3] == kd[2];
}

ffi::Error ConvFwdImpl(F32 x, F32 k, Out y, int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                       int64_t pr, int64_t threads) {
  auto xd = x.dimensions(), kd = k.dimensions();
  if (!ConvShapes(xd, kd)) return BadShapes("expected NHWC x and HWIO kernel");
  return Run(kFwd, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr, threads,
             x.untyped_data(), k.untyped_data(), y->untyped_data());
}

ffi::Error ConvBwdDataImpl(F32 dy, F32 k, Out dx, int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                           int64_t pr, int64_t threads) {
  auto xd = dx->dimensions(), kd = k.dimensions();
  if (!ConvShapes(xd, kd)) return BadShapes("expected NHWC dx and HWIO kernel");
  return Run(kBwdData, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, dx->untyped_data(), k.untyped_data(), dy.untyped_data());
}

ffi::Error ConvBwdWeightsImpl(F32 x, F32 dy, Out dk, int64_t stride, int64_t pt, int64_t pb,
                              int64_t pl, int64_t pr, int64_t threads) {
  auto xd = x.dimensions(), kd = dk->dimensions();
  if (!ConvShapes(xd, kd)) return BadShapes("expected NHWC x and HWIO kernel");
  return Run(kBwdWeights, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, x.untyped_data(), dk->untyped_data(), dy.untyped_data());
}

// Reflect-padded variants: the pads are reflect pads, done in the handler.
// nedenoise_srconv_fwd also applies SortPool to x while padding.
ffi::Error SRConvFwdImpl(F32 x, F32 k, Out y, int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                         int64_t pr, int64_t threads) {
  auto xd = x.dimensions(), kd = k.dimensions();
  if (!ConvShapes(xd, kd) || xd[3] % 2) return BadShapes("expected NHWC x (even C) and HWIO kernel");
  return Run(kFwd, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr, threads,
             x.untyped_data(), k.untyped_data(), y->untyped_data(), true, kSortPairs);
}

// nedenoise_srconv_bwd_data: the input gradient of nedenoise_srconv_fwd
// (the fold of the padding, then the sort's permutation of z, in one pass).
ffi::Error SRConvBwdDataImpl(F32 dy, F32 k, F32 z, Out dz, int64_t stride, int64_t pt, int64_t pb,
                             int64_t pl, int64_t pr, int64_t threads) {
  auto xd = dz->dimensions(), kd = k.dimensions();
  if (!ConvShapes(xd, kd) || xd[3] % 2 || z.element_count() != dz->element_count()) {
    return BadShapes("expected NHWC dz (even C) and z of one shape, and an HWIO kernel");
  }
  return Run(kBwdData, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, dz->untyped_data(), k.untyped_data(), dy.untyped_data(), true,
             kSortPairs, z.typed_data());
}

// nedenoise_srconv_bwd_weights: the kernel gradient of nedenoise_srconv_fwd
// (z sorted while padding, as in the forward pass).
ffi::Error SRConvBwdWeightsImpl(F32 z, F32 dy, Out dk, int64_t stride, int64_t pt, int64_t pb,
                                int64_t pl, int64_t pr, int64_t threads) {
  auto xd = z.dimensions(), kd = dk->dimensions();
  if (!ConvShapes(xd, kd) || xd[3] % 2) return BadShapes("expected NHWC z (even C) and HWIO kernel");
  return Run(kBwdWeights, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, z.untyped_data(), dk->untyped_data(), dy.untyped_data(), true, kSortPairs);
}

ffi::Error RConvFwdImpl(F32 x, F32 k, Out y, int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                        int64_t pr, int64_t threads) {
  auto xd = x.dimensions(), kd = k.dimensions();
  if (!ConvShapes(xd, kd)) return BadShapes("expected NHWC x and HWIO kernel");
  return Run(kFwd, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr, threads,
             x.untyped_data(), k.untyped_data(), y->untyped_data(), true);
}

ffi::Error RConvBwdDataImpl(F32 dy, F32 k, Out dx, int64_t stride, int64_t pt, int64_t pb,
                            int64_t pl, int64_t pr, int64_t threads) {
  auto xd = dx->dimensions(), kd = k.dimensions();
  if (!ConvShapes(xd, kd)) return BadShapes("expected NHWC dx and HWIO kernel");
  return Run(kBwdData, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, dx->untyped_data(), k.untyped_data(), dy.untyped_data(), true);
}

ffi::Error RConvBwdWeightsImpl(F32 x, F32 dy, Out dk, int64_t stride, int64_t pt, int64_t pb,
                               int64_t pl, int64_t pr, int64_t threads) {
  auto xd = x.dimensions(), kd = dk->dimensions();
  if (!ConvShapes(xd, kd)) return BadShapes("expected NHWC x and HWIO kernel");
  return Run(kBwdWeights, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, x.untyped_data(), dk->untyped_data(), dy.untyped_data(), true);
}

// nedenoise_mconv_*: attributes as nedenoise_rconv_* plus sort (a SortMode:
// 0 none, 2 SortPool first) and the KernelMap's anchor_h, anchor_w, n_con
// and total; theta (HWIO) and a scalar scale in place of the kernel.
// Whether the anchor tap and the constrained channels fit an HWIO kernel of dims kd.
bool AnchorInside(ffi::Span<const int64_t> kd, int64_t ah, int64_t aw, int64_t n_con) {
  return kd.size() == 4 && ah >= 0 && ah < kd[0] && aw >= 0 && aw < kd[1] && n_con >= 1 && n_con <= kd[2];
}

bool MapShapes(ffi::Span<const int64_t> kd, F32& scale, int64_t ah, int64_t aw, int64_t n_con) {
  return scale.element_count() == 1 && AnchorInside(kd, ah, aw, n_con);
}

ffi::Error BadSort(int64_t sort, int64_t c) {
  if (sort != kNoSort && sort != kSortPairs) return BadShapes("sort must be 0 or 2");
  if (sort && c % 2) return BadShapes("sorting needs an even channel count");
  return ffi::Error::Success();
}

ffi::Error MConvFwdImpl(F32 x, F32 theta, F32 scale, Out y, int64_t stride, int64_t pt, int64_t pb,
                        int64_t pl, int64_t pr, int64_t threads, int64_t sort, int64_t ah, int64_t aw,
                        int64_t n_con, float total) {
  auto xd = x.dimensions(), kd = theta.dimensions();
  if (!ConvShapes(xd, kd) || !MapShapes(kd, scale, ah, aw, n_con)) {
    return BadShapes("expected NHWC x, HWIO theta, a scalar scale and an anchor inside the kernel");
  }
  if (auto err = BadSort(sort, xd[3]); err.failure()) return err;
  KernelMap m{ah, aw, n_con, total, scale.typed_data()[0], nullptr};
  return Run(kFwd, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr, threads,
             x.untyped_data(), theta.untyped_data(), y->untyped_data(), true,
             static_cast<SortMode>(sort), nullptr, &m);
}

// z: the convolution's input (before the sort), for the sort's permutation.
ffi::Error MConvBwdDataImpl(F32 dy, F32 theta, F32 scale, F32 z, Out dz, int64_t stride, int64_t pt,
                            int64_t pb, int64_t pl, int64_t pr, int64_t threads, int64_t sort, int64_t ah,
                            int64_t aw, int64_t n_con, float total) {
  auto xd = dz->dimensions(), kd = theta.dimensions();
  if (!ConvShapes(xd, kd) || !MapShapes(kd, scale, ah, aw, n_con) ||
      z.element_count() != dz->element_count()) {
    return BadShapes("expected NHWC dz and z of one shape, HWIO theta, a scalar scale and an anchor "
                     "inside the kernel");
  }
  if (auto err = BadSort(sort, xd[3]); err.failure()) return err;
  KernelMap m{ah, aw, n_con, total, scale.typed_data()[0], nullptr};
  return Run(kBwdData, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, dz->untyped_data(), theta.untyped_data(), dy.untyped_data(), true,
             static_cast<SortMode>(sort), z.typed_data(), &m);
}

ffi::Error MConvBwdWeightsImpl(F32 x, F32 dy, F32 theta, F32 scale, Out dtheta, Out dscale,
                               int64_t stride, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                               int64_t threads, int64_t sort, int64_t ah, int64_t aw, int64_t n_con,
                               float total) {
  auto xd = x.dimensions(), kd = theta.dimensions();
  if (!ConvShapes(xd, kd) || !MapShapes(kd, scale, ah, aw, n_con) ||
      dtheta->element_count() != theta.element_count() || dscale->element_count() != 1) {
    return BadShapes("expected NHWC x, HWIO theta and dtheta of one shape, a scalar scale and an "
                     "anchor inside the kernel");
  }
  if (auto err = BadSort(sort, xd[3]); err.failure()) return err;
  KernelMap m{ah, aw, n_con, total, scale.typed_data()[0], dscale->typed_data()};
  return Run(kBwdWeights, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, x.untyped_data(), dtheta->untyped_data(), dy.untyped_data(), true,
             static_cast<SortMode>(sort), nullptr, &m, theta.typed_data());
}

// nedenoise_affine_kernel: k = A(theta) (scale 1) as the nedenoise_mconv_*
// handlers form it, for a kernel computed once (nedenoise_jax.models
// .prepare_inference): the same values, bit for bit.
ffi::Error AffineKernelImpl(F32 theta, Out k, int64_t threads, int64_t ah, int64_t aw, int64_t n_con,
                            float total) {
  auto kd = theta.dimensions();
  if (k->element_count() != theta.element_count() || !AnchorInside(kd, ah, aw, n_con)) {
    return BadShapes("expected an HWIO theta and an anchor inside the kernel");
  }
  const int nthreads = static_cast<int>(std::max<int64_t>(threads, 1));
  SlotGuard slot(threads);
  KernelMap m{ah, aw, n_con, total, 1.0f, nullptr};
  std::vector<float> anchors(kd[3]);
  AnchorValues(theta.typed_data(), HwioAddress(kd[0], kd[1], kd[2], kd[3]), anchors.data(), kd[0], kd[1],
               kd[2], kd[3], m, nthreads);
  MapKernel(theta.typed_data(), anchors.data(), k->typed_data(), kd[0], kd[1], kd[2], kd[3], m, nthreads);
  return ffi::Error::Success();
}

// SortPool (nedenoise_jax.ops.sort_pool) on rows of c channels, pair k
// being (2k, 2k+1). kind 0: y =
// (min, max) of each pair. kind 1 ("permute"): out = v with each pair swapped
// where x's pair is out of order (not first <= second), the permutation the
// sort applies to x. A swap is its own transpose, so this is also the
// gradient of the sort.
ffi::Error SortPoolRun(int kind, const float* x, const float* v, float* out, int64_t rows, int64_t c,
                       int64_t threads) {
  if (c % 2) return BadShapes("sort pool needs an even channel count");
  const int nthreads = static_cast<int>(std::max<int64_t>(threads, 1));
  SlotGuard slot(threads);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t r = 0; r < rows; ++r) {
    // kind 0 is the permutation kind 1 applies: a NaN stays in one of the
    // two outputs (XLA's minimum and maximum put it in both).
    if (kind == 0) {
      SortPixel(x + r * c, out + r * c, c);
    } else {
      PermutePixel(x + r * c, v + r * c, out + r * c, c);
    }
  }
  return ffi::Error::Success();
}

int64_t Rows(ffi::Span<const int64_t> d) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < d.size(); ++i) rows *= d[i];
  return rows;
}

ffi::Error SortPoolFwdImpl(F32 x, Out y, int64_t threads) {
  auto d = x.dimensions();
  if (d.size() == 0) return BadShapes("sort pool needs an array of rank >= 1");
  return SortPoolRun(0, x.typed_data(), nullptr, y->typed_data(), Rows(d), d[d.size() - 1], threads);
}

ffi::Error SortPoolPermuteImpl(F32 x, F32 v, Out out, int64_t threads) {
  auto d = x.dimensions();
  if (d.size() == 0 || v.element_count() != x.element_count()) {
    return BadShapes("sort pool permute needs x and v of one shape");
  }
  return SortPoolRun(1, x.typed_data(), v.typed_data(), out->typed_data(), Rows(d), d[d.size() - 1],
                     threads);
}

// A pass over n elements on `threads` cores, in blocks of kBlock: block(lo,
// hi) handles [lo, hi) and returns its float partial sum, and the partial
// sums are added in double, in a fixed order for a given thread count
// (deterministic). Being a call of this library, it takes its cores like the
// convolutions do, instead of running beside one (as XLA's own reductions
// did, slowing both).
template <typename Block>
double BlockedPass(int64_t n, int64_t threads, Block block) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int nthreads = static_cast<int>(std::max<int64_t>(threads, 1));
  std::vector<double> partial(nthreads, 0.0);
  SlotGuard slot(threads);
#pragma omp parallel num_threads(nthreads)
  {
    double acc = 0.0;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) acc += block(b * kBlock, std::min(n, (b + 1) * kBlock));
    partial[omp_get_thread_num()] = acc;
  }
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

// The gradient of alpha*x + y with respect to x and alpha in one pass over
// g and x: gx = alpha*g and galpha = sum(g*x).
ffi::Error ScaleGradImpl(F32 g, F32 x, F32 alpha, Out gx, Out galpha, int64_t threads) {
  const int64_t n = g.element_count();
  if (x.element_count() != n || gx->element_count() != n || alpha.element_count() != 1 ||
      galpha->element_count() != 1) {
    return BadShapes("scale grad needs g and x of one shape and a scalar alpha");
  }
  const float a = alpha.typed_data()[0];
  const float* gp = g.typed_data();
  const float* xp = x.typed_data();
  float* out = gx->typed_data();
  galpha->typed_data()[0] = static_cast<float>(BlockedPass(n, threads, [&](int64_t lo, int64_t hi) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = lo; i < hi; ++i) {
      s += gp[i] * xp[i];
      out[i] = a * gp[i];
    }
    return s;
  }));
  return ffi::Error::Success();
}

// The gradient of y + alpha*(x - y) (nedenoise_jax.ops.affine_combination)
// in one pass over g, x and y: gx = alpha*g, gy = g - gx and galpha =
// sum(g*(x - y)).
ffi::Error CombinationGradImpl(F32 g, F32 x, F32 y, F32 alpha, Out gx, Out gy, Out galpha,
                               int64_t threads) {
  const int64_t n = g.element_count();
  if (x.element_count() != n || y.element_count() != n || gx->element_count() != n ||
      gy->element_count() != n || alpha.element_count() != 1 || galpha->element_count() != 1) {
    return BadShapes("combination grad needs g, x and y of one shape and a scalar alpha");
  }
  const float a = alpha.typed_data()[0];
  const float *gp = g.typed_data(), *xp = x.typed_data(), *yp = y.typed_data();
  float *ox = gx->typed_data(), *oy = gy->typed_data();
  galpha->typed_data()[0] = static_cast<float>(BlockedPass(n, threads, [&](int64_t lo, int64_t hi) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = lo; i < hi; ++i) {
      const float gi = gp[i], ax = a * gi;
      s += gi * (xp[i] - yp[i]);
      ox[i] = ax;
      oy[i] = gi - ax;
    }
    return s;
  }));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseCombinationGrad, CombinationGradImpl,
    ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
        .Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseScaleGrad, ScaleGradImpl,
    ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>().Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseConvFwd, ConvFwdImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseConvBwdData, ConvBwdDataImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseConvBwdWeights, ConvBwdWeightsImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseRConvFwd, RConvFwdImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseSRConvFwd, SRConvFwdImpl,
    NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseSRConvBwdData, SRConvBwdDataImpl,
    NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseSRConvBwdWeights, SRConvBwdWeightsImpl,
    NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseRConvBwdData, RConvBwdDataImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseRConvBwdWeights, RConvBwdWeightsImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseSortPoolFwd, SortPoolFwdImpl,
    ffi::Ffi::Bind().Arg<F32>().Ret<F32>().Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseSortPoolPermute, SortPoolPermuteImpl,
    ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("threads"));

#define NEDENOISE_MAP_ATTRS(binding)                                                            \
  NEDENOISE_ATTRS(binding).Attr<int64_t>("sort").Attr<int64_t>("anchor_h").Attr<int64_t>("anchor_w") \
      .Attr<int64_t>("n_con").Attr<float>("total")
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseMConvFwd, MConvFwdImpl,
    NEDENOISE_MAP_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseMConvBwdData, MConvBwdDataImpl,
    NEDENOISE_MAP_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseMConvBwdWeights, MConvBwdWeightsImpl,
    NEDENOISE_MAP_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    NedenoiseAffineKernel, AffineKernelImpl,
    ffi::Ffi::Bind().Arg<F32>().Ret<F32>().Attr<int64_t>("threads").Attr<int64_t>("anchor_h")
        .Attr<int64_t>("anchor_w").Attr<int64_t>("n_con").Attr<float>("total"));
