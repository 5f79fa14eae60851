// XLA FFI handlers for float32 2-D convolutions on the CPU through oneDNN.
//
// Three handlers, NHWC activations and HWIO kernels as in nedenoise_jax.ops:
//   nedenoise_conv_fwd:        y  = conv(x, w)
//   nedenoise_conv_bwd_data:   dx = d conv / dx applied to dy
//   nedenoise_conv_bwd_weights dw = d conv / dw applied to dy
// Attributes: stride, pad_top, pad_bottom, pad_left, pad_right (XLA's
// explicit padding, non-negative) and threads (OpenMP threads per call).
//
// A primitive is created once per shape and kept for the life of the process;
// the kernel is reordered from HWIO into the layout the primitive prefers on
// every call (small against the convolution). Each call brings its own
// scratchpad, so calls from several XLA threads at once are safe.

#include <omp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

// N, H, W, C (input), KH, KW, O, stride, 4 pads, threads, kind.
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int>;

struct Entry {
  dnnl::primitive prim;
  dnnl::memory::desc src, weights, dst, user_weights, scratch;
  bool reorder_weights = false;
  dnnl::reorder weights_reorder;  // user HWIO -> prim (fwd, bwd data) or prim -> HWIO (bwd weights)
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

ffi::Error Run(int kind, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, int64_t o,
               int64_t stride, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads,
               void* src_ptr, void* weights_ptr, void* dst_ptr) {
  if (stride < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0 || h + pt + pb < kh || w + pl + pr < kw) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "onednn_conv: unsupported stride or padding");
  }
  try {
    if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
    auto e = Lookup(Key{n, h, w, c, kh, kw, o, stride, pt, pb, pl, pr, threads, kind});
    dnnl::engine& eng = Engine();
    thread_local dnnl::stream strm(Engine());
    dnnl::memory src(e->src, eng, src_ptr), dst(e->dst, eng, dst_ptr);
    dnnl::memory user_w(e->user_weights, eng, weights_ptr);
    dnnl::memory prim_w = user_w;
    // Uninitialized buffers: every byte is written before it is read.
    std::unique_ptr<char[]> w_buf;
    if (e->reorder_weights) {
      w_buf.reset(new char[e->weights.get_size()]);
      prim_w = dnnl::memory(e->weights, eng, w_buf.get());
      if (kind != kBwdWeights) e->weights_reorder.execute(strm, user_w, prim_w);
    }
    std::unique_ptr<char[]> scratch_buf(new char[e->scratch.get_size() + 1]);
    dnnl::memory scratch(e->scratch, eng, scratch_buf.get());
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
  } catch (const dnnl::error& err) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("onednn_conv: ") + err.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;

#define NEDENOISE_ATTRS(binding)                                                             \
  binding.Attr<int64_t>("stride").Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom")       \
      .Attr<int64_t>("pad_left").Attr<int64_t>("pad_right").Attr<int64_t>("threads")

ffi::Error ConvFwdImpl(F32 x, F32 k, ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  auto xd = x.dimensions(), kd = k.dimensions();
  if (xd.size() != 4 || kd.size() != 4 || xd[3] != kd[2]) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "onednn_conv: expected NHWC x and HWIO kernel");
  }
  return Run(kFwd, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr, threads,
             x.untyped_data(), k.untyped_data(), y->untyped_data());
}

ffi::Error ConvBwdDataImpl(F32 dy, F32 k, ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t pt,
                           int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  auto xd = dx->dimensions(), kd = k.dimensions();
  if (xd.size() != 4 || kd.size() != 4 || xd[3] != kd[2]) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "onednn_conv: expected NHWC dx and HWIO kernel");
  }
  return Run(kBwdData, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, dx->untyped_data(), k.untyped_data(), dy.untyped_data());
}

ffi::Error ConvBwdWeightsImpl(F32 x, F32 dy, ffi::ResultBuffer<ffi::F32> dk, int64_t stride,
                              int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  auto xd = x.dimensions(), kd = dk->dimensions();
  if (xd.size() != 4 || kd.size() != 4 || xd[3] != kd[2]) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "onednn_conv: expected NHWC x and HWIO kernel");
  }
  return Run(kBwdWeights, xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], stride, pt, pb, pl, pr,
             threads, x.untyped_data(), dk->untyped_data(), dy.untyped_data());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseConvFwd, ConvFwdImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseConvBwdData, ConvBwdDataImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NedenoiseConvBwdWeights, ConvBwdWeightsImpl,
                              NEDENOISE_ATTRS(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()));
