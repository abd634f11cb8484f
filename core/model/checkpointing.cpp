// Gradient checkpointing of one decoder layer (ops::decoderLayer, see runtime.h): a custom autograd
// Function whose forward runs the layer without recording and whose backward runs it again with
// recording on and the RNG state of the first run, then differentiates that. Must never change a
// result: the recompute draws the same dropout masks and writes the same keys/values to the cache.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>

#include "core/error.h"
#include "core/model/runtime.h"

namespace kh {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs besides the saved input: the layer, the cache as the layer first saw it (its
// `length` before the layer ran), the tensors to differentiate, and the RNG state to replay.
struct LayerRecompute : torch::CustomClassHolder {
  ops::LayerBody body;
  KVCache cache;
  std::vector<at::Tensor> params;
  at::Tensor rngState;
  c10::Device device = c10::kCPU;
};

at::Generator defaultGenerator(c10::Device d) {
  return at::globalContext().defaultGenerator(d.is_cuda() ? c10::Device(d.type(), d.has_index() ? d.index() : 0) : d);
}

at::Tensor rngState(c10::Device d) {
  at::Generator g = defaultGenerator(d);
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}

void setRngState(c10::Device d, const at::Tensor& s) {
  at::Generator g = defaultGenerator(d);
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(s);
}

struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  // x: [B, T, D]; params: what the layer's gradient flows to (each gets its gradient from backward).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params, c10::intrusive_ptr<LayerRecompute> r) {
    (void)params;  // the layer reads them through the model; listed so that autograd routes their gradients
    r->rngState = rngState(r->device);
    at::Tensor y = r->body(x, r->cache);  // grad mode is off here (autograd::Function::apply)
    ctx->save_for_backward({x});
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(r);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOut) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    auto r = c10::static_intrusive_pointer_cast<LayerRecompute>(ctx->saved_data["recompute"].toCapsule());
    const bool wantX = x.requires_grad();
    at::Tensor xd = x.detach().requires_grad_(wantX);
    at::Tensor y;
    {
      const at::Tensor now = rngState(r->device);
      setRngState(r->device, r->rngState);  // the same dropout masks as the first run
      at::AutoGradMode record(true);
      try {
        y = r->body(xd, r->cache);
      } catch (...) {
        setRngState(r->device, now);
        throw;
      }
      setRngState(r->device, now);
    }
    variable_list inputs;
    if (wantX) inputs.push_back(xd);
    for (const auto& p : r->params) inputs.push_back(p);
    variable_list g;
    if (!inputs.empty())
      g = torch::autograd::grad({y}, inputs, {gradOut[0]}, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
    variable_list out;
    size_t k = 0;
    out.push_back(wantX ? g[k++] : at::Tensor());
    for (size_t i = 0; i < r->params.size(); ++i) out.push_back(g[k++]);
    out.push_back(at::Tensor());  // the recompute argument is not a tensor
    return out;
  }
};

}  // namespace

namespace ops {

at::Tensor decoderLayer(const Model& m, const std::string& prefix, const at::Tensor& x, KVCache& cache, LayerBody body) {
  if (!m.gradientCheckpointing || !at::GradMode::is_enabled()) return body(x, cache);
  auto r = c10::make_intrusive<LayerRecompute>();
  r->params = m.trainableUnder(prefix);
  if (r->params.empty() && !x.requires_grad()) return body(x, cache);
  r->body = std::move(body);
  r->cache = cache;  // shares the cache's tensors; keeps `length` as this layer sees it
  r->device = x.device();
  const std::vector<at::Tensor> params = r->params;
  return CheckpointedLayer::apply(x, at::TensorList(params), r);
}

}  // namespace ops

}  // namespace kh
