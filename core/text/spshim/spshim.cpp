// kumihimo_spshim: the C interface of spshim.h over libsentencepiece (+ its trainer).
// Must never link or include torch, and must never let a C++ exception out of an extern "C"
// function: every entry point catches everything and reports through kh_sp_last_error().
#define KH_SPSHIM_BUILDING 1
#include "spshim.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

struct kh_sp_model {
  sentencepiece::SentencePieceProcessor sp;
  std::string serialized;
};

namespace {

thread_local std::string t_error;

void setError(std::string msg) { t_error = std::move(msg); }

// Runs f, turning any exception into an error message and `fail`.
template <class R, class F>
R guarded(R fail, F&& f) noexcept {
  try {
    t_error.clear();
    return f();
  } catch (const std::exception& e) {
    try {
      setError(e.what());
    } catch (...) {
    }
  } catch (...) {
    try {
      setError("unknown exception in kumihimo_spshim");
    } catch (...) {
    }
  }
  return fail;
}

bool validId(const kh_sp_model* m, int id) { return m && id >= 0 && id < m->sp.GetPieceSize(); }

// Two-call protocol: copy when it fits, always answer the full size.
long copyOut(const std::string& s, char* buf, size_t cap) {
  if (s.size() > static_cast<size_t>(std::numeric_limits<long>::max())) throw std::runtime_error("output too large");
  if (buf && s.size() <= cap && !s.empty()) std::memcpy(buf, s.data(), s.size());
  return static_cast<long>(s.size());
}

// Splits spm_train flags ("--a=1 --b=\"x y\" --c") into name -> value.
std::unordered_map<std::string, std::string> parseFlags(const char* flags) {
  std::unordered_map<std::string, std::string> out;
  const std::string s = flags ? flags : "";
  size_t i = 0;
  auto isBlank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (i < s.size()) {
    while (i < s.size() && isBlank(s[i])) ++i;
    if (i >= s.size()) break;
    std::string token;
    bool quoted = false;
    while (i < s.size() && (quoted || !isBlank(s[i]))) {
      char c = s[i++];
      if (c == '"') {
        quoted = !quoted;
      } else if (quoted && c == '\\' && i < s.size() && (s[i] == '"' || s[i] == '\\')) {
        token += s[i++];
      } else {
        token += c;
      }
    }
    if (quoted) throw std::runtime_error("unbalanced quote in training flags");
    size_t start = token.compare(0, 2, "--") == 0 ? 2 : (token.compare(0, 1, "-") == 0 ? 1 : 0);
    size_t eq = token.find('=', start);
    std::string name = token.substr(start, eq == std::string::npos ? std::string::npos : eq - start);
    std::string value = eq == std::string::npos ? "true" : token.substr(eq + 1);
    if (name.empty()) throw std::runtime_error("empty flag name in training flags: '" + token + "'");
    out[name] = value;
  }
  return out;
}

class ArraySentences : public sentencepiece::SentenceIterator {
 public:
  ArraySentences(const char* const* s, const size_t* len, size_t n) : s_(s), len_(len), n_(n) { load(); }
  bool done() const override { return i_ >= n_; }
  void Next() override {
    ++i_;
    load();
  }
  const std::string& value() const override { return cur_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void load() {
    if (i_ < n_) cur_.assign(s_[i_] ? s_[i_] : "", s_[i_] ? len_[i_] : 0);
  }
  const char* const* s_;
  const size_t* len_;
  size_t n_, i_ = 0;
  std::string cur_;
};

void writeFileOrThrow(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) throw std::runtime_error("cannot write " + path);
}

int trainImpl(const char* flags, const char* const* sentences, const size_t* lengths, size_t n) {
  auto kw = parseFlags(flags);
  auto prefixIt = kw.find("model_prefix");
  if (prefixIt == kw.end() || prefixIt->second.empty()) throw std::runtime_error("--model_prefix is required");
  const std::string prefix = prefixIt->second;
  // We write the files ourselves from the serialized proto (SentencePiece wants either a prefix
  // or an output proto), so the model holds no path and its bytes do not depend on the folder.
  kw.erase(prefixIt);
  if (sentences && kw.count("input")) throw std::runtime_error("give either sentences or --input, not both");
  if (sentences && n == 0) throw std::runtime_error("no training sentences");

  // --random_seed is a flag of spm_train's main(), not of the library; handle it the same way.
  unsigned int seed = std::numeric_limits<unsigned int>::max();  // SentencePiece: "random_device"
  if (auto it = kw.find("random_seed"); it != kw.end()) {
    unsigned long long v = std::stoull(it->second);
    if (v >= std::numeric_limits<unsigned int>::max())
      throw std::runtime_error("--random_seed must be below 4294967295 (that value means random_device)");
    seed = static_cast<unsigned int>(v);
    kw.erase(it);
  }
  if (!kw.count("minloglevel")) kw["minloglevel"] = "1";  // no INFO chatter on stderr

  // SentencePiece keeps a thread_local generator seeded on first use, so a fresh thread per
  // training is what makes the seed count (and two trainings in one process agree).
  std::string serialized, error;
  std::thread worker([&] {
    try {
      sentencepiece::SetRandomGeneratorSeed(seed);
      ArraySentences it(sentences, lengths, n);
      auto st = sentencepiece::SentencePieceTrainer::Train(kw, sentences ? &it : nullptr, &serialized);
      if (!st.ok()) error = st.ToString();
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown exception while training";
    }
  });
  worker.join();
  if (!error.empty()) throw std::runtime_error(error);

  sentencepiece::SentencePieceProcessor sp;
  auto st = sp.LoadFromSerializedProto(serialized);
  if (!st.ok()) throw std::runtime_error("trained model does not load: " + st.ToString());
  writeFileOrThrow(prefix + ".model", serialized);
  std::ostringstream vocab;  // spm_train's .vocab format: piece TAB score
  for (int i = 0; i < sp.GetPieceSize(); ++i) vocab << sp.IdToPiece(i) << "\t" << sp.GetScore(i) << "\n";
  writeFileOrThrow(prefix + ".vocab", vocab.str());
  return 0;
}

}  // namespace

extern "C" {

int kh_sp_abi_version(void) { return KH_SPSHIM_ABI_VERSION; }

const char* kh_sp_last_error(void) { return t_error.c_str(); }

kh_sp_model* kh_sp_load(const char* path) {
  return guarded<kh_sp_model*>(nullptr, [&]() -> kh_sp_model* {
    if (!path) throw std::runtime_error("null path");
    auto m = std::make_unique<kh_sp_model>();
    auto st = m->sp.Load(path);
    if (!st.ok()) throw std::runtime_error(st.ToString());
    m->serialized = m->sp.serialized_model_proto();
    return m.release();
  });
}

kh_sp_model* kh_sp_load_serialized(const char* data, size_t len) {
  return guarded<kh_sp_model*>(nullptr, [&]() -> kh_sp_model* {
    auto m = std::make_unique<kh_sp_model>();
    m->serialized.assign(data ? data : "", data ? len : 0);
    auto st = m->sp.LoadFromSerializedProto(m->serialized);
    if (!st.ok()) throw std::runtime_error(st.ToString());
    return m.release();
  });
}

void kh_sp_free(kh_sp_model* model) {
  guarded<int>(0, [&] {
    delete model;
    return 0;
  });
}

int kh_sp_piece_size(const kh_sp_model* model) {
  return guarded<int>(-1, [&] { return model ? model->sp.GetPieceSize() : -1; });
}

int kh_sp_piece_to_id(const kh_sp_model* model, const char* piece, size_t len) {
  return guarded<int>(-1, [&] {
    if (!model) return -1;
    std::string_view p(piece ? piece : "", piece ? len : 0);
    int id = model->sp.PieceToId(p);
    // PieceToId answers unk_id for anything it does not know.
    if (id < 0 || id >= model->sp.GetPieceSize() || model->sp.IdToPiece(id) != p) return -1;
    return id;
  });
}

long kh_sp_id_to_piece(const kh_sp_model* model, int id, char* buf, size_t cap) {
  return guarded<long>(-1, [&]() -> long {
    if (!validId(model, id)) throw std::runtime_error("id " + std::to_string(id) + " out of range");
    return copyOut(model->sp.IdToPiece(id), buf, cap);
  });
}

int kh_sp_piece_flags(const kh_sp_model* model, int id) {
  return guarded<int>(-1, [&] {
    if (!validId(model, id)) throw std::runtime_error("id " + std::to_string(id) + " out of range");
    int f = KH_SP_NORMAL;
    if (model->sp.IsControl(id)) f |= KH_SP_CONTROL;
    if (model->sp.IsUnknown(id)) f |= KH_SP_UNKNOWN;
    if (model->sp.IsByte(id)) f |= KH_SP_BYTE;
    if (model->sp.IsUnused(id)) f |= KH_SP_UNUSED;
    return f;
  });
}

float kh_sp_score(const kh_sp_model* model, int id) {
  return guarded<float>(0.0f, [&] { return validId(model, id) ? model->sp.GetScore(id) : 0.0f; });
}

int kh_sp_bos_id(const kh_sp_model* model) { return guarded<int>(-1, [&] { return model ? model->sp.bos_id() : -1; }); }
int kh_sp_eos_id(const kh_sp_model* model) { return guarded<int>(-1, [&] { return model ? model->sp.eos_id() : -1; }); }
int kh_sp_unk_id(const kh_sp_model* model) { return guarded<int>(-1, [&] { return model ? model->sp.unk_id() : -1; }); }
int kh_sp_pad_id(const kh_sp_model* model) { return guarded<int>(-1, [&] { return model ? model->sp.pad_id() : -1; }); }

long kh_sp_encode(const kh_sp_model* model, const char* text, size_t len, int32_t* ids, size_t cap) {
  return guarded<long>(-1, [&]() -> long {
    if (!model) throw std::runtime_error("null model");
    std::vector<int> out;
    auto st = model->sp.Encode(std::string_view(text ? text : "", text ? len : 0), &out);
    if (!st.ok()) throw std::runtime_error(st.ToString());
    if (ids && out.size() <= cap)
      for (size_t i = 0; i < out.size(); ++i) ids[i] = out[i];
    return static_cast<long>(out.size());
  });
}

long kh_sp_decode(const kh_sp_model* model, const int32_t* ids, size_t n, char* buf, size_t cap) {
  return guarded<long>(-1, [&]() -> long {
    if (!model) throw std::runtime_error("null model");
    std::vector<int> in(n);
    for (size_t i = 0; i < n; ++i) {
      if (!validId(model, ids[i])) throw std::runtime_error("id " + std::to_string(ids[i]) + " out of range");
      in[i] = ids[i];
    }
    std::string out;
    auto st = model->sp.Decode(in, &out);
    if (!st.ok()) throw std::runtime_error(st.ToString());
    return copyOut(out, buf, cap);
  });
}

long kh_sp_serialized(const kh_sp_model* model, char* buf, size_t cap) {
  return guarded<long>(-1, [&]() -> long {
    if (!model) throw std::runtime_error("null model");
    return copyOut(model->serialized, buf, cap);
  });
}

int kh_sp_train(const char* flags, const char* const* sentences, const size_t* lengths, size_t n) {
  return guarded<int>(-1, [&] { return trainImpl(flags, sentences, lengths, n); });
}

}  // extern "C"
