// Model loading, the KV cache, and the math every family shares (see runtime.h). The formulas
// follow transformers' modeling files (eager attention): RMSNorm/softmax in fp32, RoPE tables
// computed in fp32 and cast, rotate_half (non-interleaved) RoPE, llama3/linear rope scaling.
#include "core/model/runtime.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "core/io/tensor_load.h"

namespace kh {

c10::Device parseDevice(const std::string& text) {
  c10::Device d = c10::kCPU;
  try {
    d = c10::Device(text);
  } catch (const std::exception&) {
    throw Error("--device", "'" + text + "' is not a device", "use cpu, cuda or cuda:N");
  }
  if (d.is_cuda()) {
    if (!at::hasCUDA()) throw Error("--device", "'" + text + "': this build of libtorch has no CUDA or no GPU is visible");
    if (d.has_index() && d.index() >= static_cast<int>(at::getNumGPUs()))
      throw Error("--device", "'" + text + "' does not exist: " + std::to_string(at::getNumGPUs()) + " GPU(s) visible");
  } else if (!d.is_cpu()) {
    throw Error("--device", "'" + text + "' is not supported", "use cpu or cuda[:N]");
  }
  return d;
}

static c10::ScalarType storedType(const ModelFolder& f) {
  // The dtype most of the parameters are stored in.
  std::map<st::DType, uint64_t> n;
  for (const auto& name : f.weights->names()) n[f.weights->entry(name).dtype] += f.weights->entry(name).numel();
  st::DType best = st::DType::F32;
  uint64_t most = 0;
  for (const auto& [d, k] : n)
    if (k > most) most = k, best = d;
  return toScalarType(best, f.dir);
}

std::shared_ptr<Model> Model::load(const ModelFolder& folder, const RunOptions& opt) {
  folder.requireExactLayout();
  auto m = std::shared_ptr<Model>(new Model());
  m->config_ = folder.config;
  m->family_ = folder.family;
  KH_ASSERT(m->family_->forward != nullptr, "family without a forward pass: " + m->family_->name);
  m->device_ = parseDevice(opt.device);
  m->dtype_ = computeDtype(storedType(folder), m->device_, opt.dtype);
  for (const auto& e : m->family_->layout(m->config_)) {
    if (!folder.weights->has(e.name)) continue;  // optional (tied head)
    const auto& entry = folder.weights->entry(e.name);
    if (m->device_.is_cpu() && toScalarType(entry.dtype, e.name) == m->dtype_)
      m->weights_[e.name] = folder.weights->tensor(e.name);  // where it lies: a view of the mapping
    else
      m->weights_[e.name] = loadTensor(*folder.weights, e.name, m->dtype_, m->device_);
  }
  return m;
}

c10::ScalarType Model::computeDtype(c10::ScalarType stored, c10::Device device, const std::string& requested) {
  if (requested.empty()) {
    if (device.is_cpu() && stored == at::kHalf) return at::kFloat;
    if (stored != at::kHalf && stored != at::kBFloat16 && stored != at::kFloat) return at::kFloat;
    return stored;
  }
  if (requested == "fp32" || requested == "float32") return at::kFloat;
  if (requested == "bf16" || requested == "bfloat16") return at::kBFloat16;
  if (requested == "fp16" || requested == "float16") {
    if (device.is_cpu())
      throw Error("--dtype", "fp16 cannot run on the CPU (libtorch 1.13 has no CPU fp16 matmul)", "use bf16 or fp32 on the CPU");
    return at::kHalf;
  }
  throw Error("--dtype", "'" + requested + "' is not one of fp32, bf16, fp16");
}

static void checkWeight(const std::string& name, const at::Tensor& t, const std::vector<int64_t>& shape, c10::Device device,
                        c10::ScalarType dtype) {
  if (!t.defined()) throw Error(name, "weight is undefined");
  if (t.sizes() != c10::IntArrayRef(shape) || t.scalar_type() != dtype || t.device() != device) {
    std::ostringstream o;
    o << "weight is " << t.sizes() << " " << t.scalar_type() << " on " << t.device() << ", expected "
      << c10::IntArrayRef(shape) << " " << dtype << " on " << device;
    throw Error(name, o.str());
  }
}

std::shared_ptr<Model> Model::fromWeights(const ModelFolder& folder, std::unordered_map<std::string, at::Tensor> weights,
                                          c10::Device device, c10::ScalarType dtype) {
  auto m = std::shared_ptr<Model>(new Model());
  m->config_ = folder.config;
  m->family_ = folder.family;
  KH_ASSERT(m->family_->forward != nullptr, "family without a forward pass: " + m->family_->name);
  m->device_ = device;
  m->dtype_ = dtype;
  for (const auto& e : m->family_->layout(m->config_)) {
    auto it = weights.find(e.name);
    if (it == weights.end()) {
      if (e.optional) continue;
      throw Error(e.name, "missing from the weights of the model");
    }
    checkWeight(e.name, it->second, e.shape, device, dtype);
    m->weights_[e.name] = std::move(it->second);
    weights.erase(it);
  }
  if (!weights.empty()) throw Error(weights.begin()->first, "is not a tensor of " + m->family_->name + " models");
  return m;
}

void Model::setWeight(const std::string& name, at::Tensor value) {
  auto it = weights_.find(name);
  if (it == weights_.end()) throw Error(name, "the model has no such weight");
  checkWeight(name, value, it->second.sizes().vec(), device_, dtype_);
  it->second = std::move(value);
}

bool Model::weightsAreInOut() const { return family_->name == "gpt2"; }

void Model::setAdapter(const std::string& module, LinearAdapter a) {
  auto it = weights_.find(module + ".weight");
  if (it == weights_.end() || it->second.dim() != 2) throw Error(module, "the model has no linear layer of that name");
  const bool inOut = weightsAreInOut();  // Conv1D: [in, out]
  const int64_t out = it->second.size(inOut ? 1 : 0), in = it->second.size(inOut ? 0 : 1);
  if (!a.A.defined() || !a.B.defined() || a.A.dim() != 2 || a.B.dim() != 2 || a.A.size(1) != in || a.B.size(0) != out ||
      a.B.size(1) != a.A.size(0))
    throw Error(module, "adapter shapes do not fit the layer [" + std::to_string(out) + ", " + std::to_string(in) + "]",
                "lora_A must be [r, in] and lora_B [out, r]");
  adapters_[module] = std::move(a);
}

std::vector<at::Tensor> Model::trainableUnder(const std::string& prefix) const {
  std::vector<at::Tensor> out;
  for (const auto& e : family_->layout(config_)) {
    if (e.name.compare(0, prefix.size(), prefix) != 0) continue;
    auto it = weights_.find(e.name);
    if (it != weights_.end() && it->second.requires_grad()) out.push_back(it->second);
    static const std::string kW = ".weight";
    if (e.name.size() > kW.size() && e.name.compare(e.name.size() - kW.size(), kW.size(), kW) == 0)
      if (const LinearAdapter* a = adapter(e.name.substr(0, e.name.size() - kW.size())))
        for (const at::Tensor* t : {&a->A, &a->B})
          if (t->requires_grad()) out.push_back(*t);
  }
  return out;
}

std::vector<std::string> Model::weightNames() const {
  std::vector<std::string> names;
  for (const auto& e : family_->layout(config_))
    if (weights_.count(e.name)) names.push_back(e.name);
  return names;
}

const at::Tensor& Model::weight(const std::string& name) const {
  auto it = weights_.find(name);
  KH_ASSERT(it != weights_.end(), "no weight " + name);
  return it->second;
}

KVCache Model::newCache(int64_t batch, int64_t capacity) const {
  KVCache c;
  c.capacity = capacity;
  auto opts = at::TensorOptions().dtype(dtype_).device(device_);
  for (int64_t i = 0; i < config_.numLayers; ++i) {
    c.k.push_back(at::empty({batch, config_.numKvHeads, capacity, config_.headDim}, opts));
    c.v.push_back(at::empty({batch, config_.numKvHeads, capacity, config_.headDim}, opts));
  }
  c.keyPos = at::full({batch, capacity}, -1, at::TensorOptions().dtype(at::kLong).device(device_));
  return c;
}

at::Tensor Model::forward(const ForwardBatch& b, KVCache& cache) const {
  KH_ASSERT(b.ids.dim() == 2 && b.positions.sizes() == b.ids.sizes(), "ids and positions must be [B, T]");
  if (cache.length + b.ids.size(1) > cache.capacity)
    throw Error("generation", "context of " + std::to_string(cache.length + b.ids.size(1)) +
                                  " tokens exceeds the cache of " + std::to_string(cache.capacity));
  at::Tensor out = family_->forward(*this, b, cache);
  cache.length += b.ids.size(1);
  return out;
}

// Set by forwardHidden for the duration of one forward on this thread: ops::outputHead stores the
// final hidden states there and returns a [.., 1] stand-in instead of projecting to the vocabulary.
static thread_local at::Tensor* tHiddenCapture = nullptr;

at::Tensor Model::forwardHidden(const ForwardBatch& b, KVCache& cache) const {
  at::Tensor hidden;
  tHiddenCapture = &hidden;
  try {
    forward(b, cache);
  } catch (...) {
    tHiddenCapture = nullptr;
    throw;
  }
  tHiddenCapture = nullptr;
  KH_ASSERT(hidden.defined(), "family forward did not go through ops::outputHead: " + family_->name);
  return hidden.to(at::kFloat);  // [B, T, D]
}

at::Tensor Model::logits(const std::vector<int64_t>& ids) const {
  KH_ASSERT(!ids.empty());
  const int64_t T = static_cast<int64_t>(ids.size());
  KVCache cache = newCache(1, T);
  ForwardBatch b;
  b.ids = at::tensor(ids, at::kLong).view({1, T}).to(device_);
  b.positions = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device_)).view({1, T});
  return forward(b, cache)[0];
}

// ---------------------------------------------------------------------------------------------

namespace ops {

at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& w, double eps, bool addOne) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // fp64 only for fp64 models (gradient checks)
  at::Tensor xf = x.to(acc);
  at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  if (addOne) return (normed * (w.to(acc) + 1.0)).to(x.scalar_type());  // Gemma: all in fp32
  return w * normed.to(x.scalar_type());                                       // Llama: cast, then scale
}

at::Tensor layerNorm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

at::Tensor activation(const at::Tensor& x, const std::string& name) {
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast") return at::gelu(x, "tanh");
  if (name == "relu") return at::relu(x);
  throw Error("config.json", "activation '" + name + "' is not supported", "supported: silu, gelu, gelu_pytorch_tanh, gelu_new, relu");
}

static at::Tensor invFrequencies(const ModelConfig& c, const c10::Device& device) {
  const int64_t hd = c.headDim;
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  // inv_freq = 1 / theta^(2i/hd), computed as transformers does (int64 arange, then float).
  at::Tensor inv = 1.0 / at::pow(c.ropeTheta, at::arange(0, hd, 2, opts.dtype(at::kLong)).to(at::kFloat) / hd);
  const auto& rs = c.ropeScaling;
  if (rs.type.empty()) return inv;
  if (rs.type == "linear") return inv / rs.factor;
  if (rs.type == "llama3") {
    const double oldLen = static_cast<double>(rs.originalMaxPositions);
    const double lowWavelen = oldLen / rs.lowFreqFactor, highWavelen = oldLen / rs.highFreqFactor;
    at::Tensor wavelen = 2 * M_PI / inv;
    at::Tensor scaled = at::where(wavelen > lowWavelen, inv / rs.factor, inv);
    at::Tensor smooth = (oldLen / wavelen - rs.lowFreqFactor) / (rs.highFreqFactor - rs.lowFreqFactor);
    at::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    at::Tensor medium = (wavelen >= highWavelen).logical_and(wavelen <= lowWavelen);
    return at::where(medium, smoothed, scaled);
  }
  throw Error("config.json: rope_scaling", "type '" + rs.type + "' is not supported yet", "supported: linear, llama3");
}

std::pair<at::Tensor, at::Tensor> ropeTables(const ModelConfig& c, const at::Tensor& positions, c10::ScalarType dtype) {
  at::Tensor inv = invFrequencies(c, positions.device());                      // [hd/2]
  at::Tensor pos = positions.clamp_min(0).to(at::kFloat);                       // [B, T]
  at::Tensor freqs = pos.unsqueeze(-1) * inv.view({1, 1, -1});                 // [B, T, hd/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);                                // [B, T, hd]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

at::Tensor applyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // x: [B, H, T, hd]; cos/sin: [B, T, hd] -> [B, 1, T, hd]
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  at::Tensor rotated = at::cat({-x2, x1}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

void cacheAppend(KVCache& cache, int64_t layer, const at::Tensor& k, const at::Tensor& v, const at::Tensor& positions) {
  const int64_t T = k.size(2);
  cache.k[static_cast<size_t>(layer)].narrow(2, cache.length, T).copy_(k);
  cache.v[static_cast<size_t>(layer)].narrow(2, cache.length, T).copy_(v);
  if (layer == 0) cache.keyPos.narrow(1, cache.length, T).copy_(positions);
}

at::Tensor attentionMask(const KVCache& cache, int64_t keys, const at::Tensor& qPos, int64_t window) {
  at::Tensor kPos = cache.keyPos.narrow(1, 0, keys).unsqueeze(1);  // [B, 1, S]
  at::Tensor q = qPos.unsqueeze(-1);                                // [B, T, 1]
  at::Tensor allowed = (kPos >= 0).logical_and(kPos <= q);          // causal, no padding keys
  if (window > 0) allowed = allowed.logical_and((q - kPos) < window);  // transformers: kv > q - window
  return allowed.unsqueeze(1);                                      // [B, 1, T, S]
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale, double softcap) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), hd = q.size(3), KVH = k.size(1);
  const int64_t groups = H / KVH;
  // GQA without repeating k/v: the query heads of one kv head side by side. [B, KVH, groups*T, hd]
  at::Tensor qg = q.reshape({B, KVH, groups * T, hd});
  // Scale and soft-cap in the compute dtype, then mask and softmax in fp32 (transformers' eager path).
  at::Tensor scores = at::matmul(qg, k.transpose(-1, -2)) * scale;  // [B, KVH, groups*T, S]
  scores = scores.view({B, H, T, -1});                             // [B, H, T, S]
  if (softcap > 0) scores = at::tanh(scores / softcap) * softcap;
  // The lowest finite float, as transformers does: a padding query (no allowed key) gets a
  // harmless uniform row instead of NaNs that would reach the cache.
  scores = scores.to(scores.scalar_type() == at::kDouble ? at::kDouble : at::kFloat).masked_fill(mask.logical_not(), std::numeric_limits<float>::lowest());
  at::Tensor probs = at::softmax(scores, -1).to(v.scalar_type());                  // [B, H, T, S]
  at::Tensor out = at::matmul(probs.view({B, KVH, groups * T, -1}), v);             // [B, KVH, groups*T, hd]
  return out.view({B, H, T, hd}).transpose(1, 2).reshape({B, T, H * hd});
}

at::Tensor linear(const Model& m, const std::string& name, const at::Tensor& x) {
  const std::string bias = name + ".bias";
  at::Tensor y = at::linear(x, m.weight(name + ".weight"), m.hasWeight(bias) ? m.weight(bias) : at::Tensor());
  return withAdapter(m, name, x, std::move(y));
}

at::Tensor withAdapter(const Model& m, const std::string& name, const at::Tensor& x, at::Tensor y) {
  const LinearAdapter* a = m.adapter(name);
  if (!a) return y;
  // Adapters may be kept in a wider dtype than the weights (fp32 LoRA on a bf16 model, as PEFT
  // does): the adapter path runs in the adapter's dtype and its result is cast to y's.
  at::Tensor xin = x.scalar_type() == a->A.scalar_type() ? x : x.to(a->A.scalar_type());
  if (m.training && a->dropout > 0) xin = at::dropout(xin, a->dropout, /*train=*/true);
  at::Tensor delta = at::linear(at::linear(xin, a->A), a->B) * a->scale;  // [.., out]
  return y + (delta.scalar_type() == y.scalar_type() ? delta : delta.to(y.scalar_type()));
}

at::Tensor selfAttention(const Model& m, const std::string& p, int64_t layer, const at::Tensor& h,
                         const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions, KVCache& cache) {
  const ModelConfig& c = m.config();
  const int64_t B = h.size(0), T = h.size(1);
  at::Tensor q = linear(m, p + "self_attn.q_proj", h).view({B, T, c.numHeads, c.headDim}).transpose(1, 2);    // [B, H, T, hd]
  at::Tensor k = linear(m, p + "self_attn.k_proj", h).view({B, T, c.numKvHeads, c.headDim}).transpose(1, 2);  // [B, KVH, T, hd]
  at::Tensor v = linear(m, p + "self_attn.v_proj", h).view({B, T, c.numKvHeads, c.headDim}).transpose(1, 2);  // [B, KVH, T, hd]
  q = applyRope(q, cos, sin);
  k = applyRope(k, cos, sin);
  cacheAppend(cache, layer, k, v, positions);
  const int64_t keys = cache.length + T;
  const int64_t window = c.layerWindow[static_cast<size_t>(layer)];
  at::Tensor mask = attentionMask(cache, keys, positions, window);  // [B, 1, T, S]
  const auto& kc = cache.k[static_cast<size_t>(layer)];
  const auto& vc = cache.v[static_cast<size_t>(layer)];
  at::Tensor a = attention(q, kc.narrow(2, 0, keys), vc.narrow(2, 0, keys), mask, c.attnScale, c.attnLogitSoftcap);
  return linear(m, p + "self_attn.o_proj", a);  // [B, T, D]
}

at::Tensor gatedMlp(const Model& m, const std::string& p, const at::Tensor& h) {
  at::Tensor g = activation(linear(m, p + "mlp.gate_proj", h), m.config().activation);  // [B, T, I]
  return linear(m, p + "mlp.down_proj", g * linear(m, p + "mlp.up_proj", h));         // [B, T, D]
}

at::Tensor outputHead(const Model& m, const at::Tensor& x, const std::string& embeddingName) {
  if (tHiddenCapture) {  // Model::forwardHidden: keep x, skip the projection
    *tHiddenCapture = x;
    return x.narrow(-1, 0, 1);
  }
  const bool separate = m.hasWeight("lm_head.weight");
  return at::linear(x, m.weight(separate ? "lm_head.weight" : embeddingName));
}

}  // namespace ops

}  // namespace kh
