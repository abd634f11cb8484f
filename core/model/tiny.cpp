// The tiny checkpoint maker (see tiny.h). Config field sets follow the real models' config.json
// files (llm-jp-3-3.7b, Mistral-7B-Instruct-v0.2, gemma-2-2b-jpn-it, llm-jp-1.3b-v1.0,
// Qwen2-7B-Instruct); special-token ids follow the real tokenizers where the tiny vocab allows.
#include "core/model/tiny.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/model/config.h"
#include "core/text/tokenizer.h"

namespace kh {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

// Everything family-specific the maker needs besides the layout (which comes from the registry).
struct TinyRecipe {
  ordered_json config;
  ordered_json generation;
  SentencePieceTrainOptions sp;
  ordered_json tokenizerConfig;   // without added_tokens_decoder (filled from the trained model)
  std::vector<std::string> specialTokens;  // listed in added_tokens_decoder
  st::DType dtype = st::DType::BF16;
};

const char* dtypeField(st::DType d) {
  switch (d) {
    case st::DType::F32: return "float32";
    case st::DType::F16: return "float16";
    default: return "bfloat16";
  }
}

const char* kGemmaTemplate =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

const char* kLlmJp3Template =
    "{{bos_token}}{% for message in messages %}{% if message['role'] == 'user' %}{{ '\\n\\n### 指示:\\n' + message['content'] }}"
    "{% elif message['role'] == 'system' %}{{ '以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。' }}"
    "{% elif message['role'] == 'assistant' %}{{ '\\n\\n### 応答:\\n' + message['content'] + eos_token }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '\\n\\n### 応答:\\n' }}{% endif %}{% endfor %}";

// Meta-Llama-3-8B-Instruct's template (3.0), as published.
const char* kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const char* kMistralTemplate =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

const char* kChatMLTemplate =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

// What LLM SentencePiece tokenizers (Llama, Mistral, Gemma) use instead of SentencePiece's
// defaults: no NFKC, whitespace kept as written (newlines matter to chat templates), digits split.
void llamaStyleNormalization(SentencePieceTrainOptions& sp) {
  sp.normalizationRule = "identity";
  sp.removeExtraWhitespaces = false;
  sp.splitDigits = true;
}

// Lines the chat templates need, so that their markers become pieces instead of bytes.
std::vector<std::string> chatCorpus() {
  std::vector<std::string> lines;
  const char* words[] = {"user\n", "model\n", "assistant\n", "system\n", "### 指示:\n", "### 応答:\n",
                         "[INST] ", " [/INST]", "You are a helpful assistant.", "Hello, world! How are you?",
                         "The answer is 42.", "def main():\n    return 0\n"};
  for (int rep = 0; rep < 20; ++rep)
    for (const char* w : words) lines.push_back(w);
  return lines;
}

TinyRecipe recipeFor(const TinyOptions& o) {
  TinyRecipe r;
  const std::string& f = o.family;
  const int64_t headDim = o.hidden / o.heads;
  if (f == "llama") {
    r.config = {{"architectures", {"LlamaForCausalLM"}}, {"attention_bias", false}, {"attention_dropout", 0.0},
                {"bos_token_id", 1}, {"eos_token_id", 2}, {"head_dim", headDim}, {"hidden_act", "silu"},
                {"hidden_size", o.hidden}, {"initializer_range", 0.02}, {"intermediate_size", o.intermediate},
                {"max_position_embeddings", 4096}, {"mlp_bias", false}, {"model_type", "llama"},
                {"num_attention_heads", o.heads}, {"num_hidden_layers", o.layers}, {"num_key_value_heads", o.kvHeads},
                {"pretraining_tp", 1}, {"rms_norm_eps", 1e-05}, {"rope_scaling", nullptr}, {"rope_theta", 10000},
                {"tie_word_embeddings", o.tied.value_or(false)}};
    r.generation = {{"bos_token_id", 1}, {"eos_token_id", 2}};
    r.sp.unkId = 0; r.sp.bosId = 1; r.sp.eosId = 2; r.sp.padId = 3;
    llamaStyleNormalization(r.sp);
    r.tokenizerConfig = {{"add_bos_token", true}, {"add_eos_token", false}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
                         {"pad_token", "<pad>"}, {"unk_token", "<unk>"}, {"chat_template", kLlmJp3Template},
                         {"tokenizer_class", "LlamaTokenizer"}, {"legacy", true}};
    r.specialTokens = {"<unk>", "<s>", "</s>", "<pad>"};
    if (o.variant == "llama3") {
      // Llama 3 Instruct: no dummy prefix (its tokenizer is byte-level BPE), the turn markers as
      // single tokens, eos = <|eot_id|> as the Instruct config says, generation stops on both ends.
      r.sp = {};
      llamaStyleNormalization(r.sp);
      r.sp.modelType = "bpe";
      r.sp.addDummyPrefix = false;
      r.sp.unkId = 0; r.sp.bosId = 1; r.sp.eosId = 2; r.sp.padId = -1;
      r.sp.bosPiece = "<|begin_of_text|>"; r.sp.eosPiece = "<|end_of_text|>";
      r.sp.userDefinedSymbols = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};  // 3, 4, 5
      r.config["bos_token_id"] = 1;
      r.config["eos_token_id"] = 5;
      r.config["rope_theta"] = 500000.0;
      r.generation = {{"bos_token_id", 1}, {"eos_token_id", {2, 5}}};
      r.tokenizerConfig = {{"add_bos_token", true}, {"add_eos_token", false}, {"bos_token", "<|begin_of_text|>"},
                           {"eos_token", "<|eot_id|>"}, {"pad_token", nullptr}, {"unk_token", nullptr},
                           {"chat_template", kLlama3Template}, {"tokenizer_class", "PreTrainedTokenizerFast"}};
      r.specialTokens = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    }
  } else if (f == "mistral") {
    r.config = {{"architectures", {"MistralForCausalLM"}}, {"attention_dropout", 0.0}, {"bos_token_id", 1},
                {"eos_token_id", 2}, {"hidden_act", "silu"}, {"hidden_size", o.hidden}, {"initializer_range", 0.02},
                {"intermediate_size", o.intermediate}, {"max_position_embeddings", 32768}, {"model_type", "mistral"},
                {"num_attention_heads", o.heads}, {"num_hidden_layers", o.layers}, {"num_key_value_heads", o.kvHeads},
                {"rms_norm_eps", 1e-05}, {"rope_theta", 1000000.0}, {"sliding_window", o.slidingWindow},
                {"tie_word_embeddings", o.tied.value_or(false)}};
    r.generation = {{"bos_token_id", 1}, {"eos_token_id", 2}};
    r.sp.unkId = 0; r.sp.bosId = 1; r.sp.eosId = 2; r.sp.padId = -1;
    llamaStyleNormalization(r.sp);
    r.sp.modelType = "bpe";
    r.tokenizerConfig = {{"add_bos_token", true}, {"add_eos_token", false}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
                         {"pad_token", nullptr}, {"unk_token", "<unk>"}, {"chat_template", kMistralTemplate},
                         {"tokenizer_class", "LlamaTokenizer"}, {"legacy", true}};
    r.specialTokens = {"<unk>", "<s>", "</s>"};
  } else if (f == "gemma2") {
    r.config = {{"architectures", {"Gemma2ForCausalLM"}}, {"attention_bias", false}, {"attention_dropout", 0.0},
                {"attn_logit_softcapping", 50.0}, {"bos_token_id", 2}, {"cache_implementation", "hybrid"},
                {"eos_token_id", 1}, {"final_logit_softcapping", 30.0}, {"head_dim", headDim},
                {"hidden_act", "gelu_pytorch_tanh"}, {"hidden_activation", "gelu_pytorch_tanh"},
                {"hidden_size", o.hidden}, {"initializer_range", 0.02}, {"intermediate_size", o.intermediate},
                {"max_position_embeddings", 8192}, {"model_type", "gemma2"}, {"num_attention_heads", o.heads},
                {"num_hidden_layers", o.layers}, {"num_key_value_heads", o.kvHeads}, {"pad_token_id", 0},
                // Deliberately not head_dim: real copies disagree, engines must read this field.
                {"query_pre_attn_scalar", headDim + 8}, {"rms_norm_eps", 1e-06}, {"rope_theta", 10000.0},
                {"sliding_window", o.slidingWindow}, {"tie_word_embeddings", o.tied.value_or(true)}};
    // eos only, as in the real file: the end of turn (107) must come from the chat template.
    r.generation = {{"bos_token_id", 2}, {"cache_implementation", "hybrid"}, {"eos_token_id", 1}, {"pad_token_id", 0}};
    r.sp.padId = 0; r.sp.eosId = 1; r.sp.bosId = 2; r.sp.unkId = 3;
    r.sp.bosPiece = "<bos>"; r.sp.eosPiece = "<eos>";
    llamaStyleNormalization(r.sp);
    r.sp.modelType = "bpe";
    r.sp.addDummyPrefix = false;  // Gemma's tokenizer adds no dummy prefix
    r.sp.allowWhitespaceOnlyPieces = true;
    r.sp.userDefinedSymbols = {"<mask>", "<2mass>", "[@BOS@]"};
    for (int i = 0; i < 99; ++i) r.sp.userDefinedSymbols.push_back("<unused" + std::to_string(i) + ">");
    r.sp.userDefinedSymbols.push_back("<start_of_turn>");  // id 106, as in Gemma
    r.sp.userDefinedSymbols.push_back("<end_of_turn>");    // id 107
    r.tokenizerConfig = {{"add_bos_token", true}, {"add_eos_token", false}, {"bos_token", "<bos>"}, {"eos_token", "<eos>"},
                         {"pad_token", "<pad>"}, {"unk_token", "<unk>"},
                         {"additional_special_tokens", {"<start_of_turn>", "<end_of_turn>"}},
                         {"chat_template", kGemmaTemplate}, {"tokenizer_class", "GemmaTokenizer"}};
    r.specialTokens = {"<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"};
  } else if (f == "gpt2") {
    r.config = {{"activation_function", "gelu"}, {"architectures", {"GPT2LMHeadModel"}}, {"attn_pdrop", 0.1},
                {"bos_token_id", 7}, {"embd_pdrop", 0.1}, {"eos_token_id", 7}, {"initializer_range", 0.02},
                {"layer_norm_epsilon", 1e-05}, {"model_type", "gpt2"}, {"n_embd", o.hidden}, {"n_head", o.heads},
                {"n_inner", o.intermediate}, {"n_layer", o.layers}, {"n_positions", 256},
                {"reorder_and_upcast_attn", false}, {"resid_pdrop", 0.1}, {"scale_attn_by_inverse_layer_idx", false},
                {"scale_attn_weights", true}, {"summary_activation", nullptr}, {"summary_first_dropout", 0.1},
                {"summary_proj_to_labels", true}, {"summary_type", "cls_index"}, {"summary_use_proj", true},
                {"tie_word_embeddings", o.tied.value_or(true)}};
    r.generation = {{"bos_token_id", 7}, {"eos_token_id", 7}};
    r.sp.unkId = 0; r.sp.bosId = 1; r.sp.eosId = 2; r.sp.padId = 3;
    r.sp.userDefinedSymbols = {"<CLS|LLM-jp>", "<SEP|LLM-jp>", "<MASK|LLM-jp>", "<EOD|LLM-jp>"};  // EOD = 7
    r.tokenizerConfig = {{"add_bos_token", false}, {"add_eos_token", false}, {"bos_token", "<EOD|LLM-jp>"},
                         {"eos_token", "<EOD|LLM-jp>"}, {"pad_token", "<pad>"}, {"unk_token", "<unk>"},
                         {"tokenizer_class", "PreTrainedTokenizerFast"}};
    r.specialTokens = {"<unk>", "<s>", "</s>", "<pad>", "<CLS|LLM-jp>", "<SEP|LLM-jp>", "<MASK|LLM-jp>", "<EOD|LLM-jp>"};
    r.sp.controlSymbols = {};
    r.dtype = st::DType::F16;
  } else if (f == "qwen2") {
    r.config = {{"architectures", {"Qwen2ForCausalLM"}}, {"attention_dropout", 0.0}, {"bos_token_id", 1},
                {"eos_token_id", 3}, {"hidden_act", "silu"}, {"hidden_size", o.hidden}, {"initializer_range", 0.02},
                {"intermediate_size", o.intermediate}, {"max_position_embeddings", 32768}, {"max_window_layers", o.layers},
                {"model_type", "qwen2"}, {"num_attention_heads", o.heads}, {"num_hidden_layers", o.layers},
                {"num_key_value_heads", o.kvHeads}, {"rms_norm_eps", 1e-06}, {"rope_theta", 1000000.0},
                {"sliding_window", 131072}, {"tie_word_embeddings", o.tied.value_or(false)},
                {"use_sliding_window", false}};
    r.generation = {{"bos_token_id", 1}, {"eos_token_id", {3, 1}}, {"pad_token_id", 1}};
    r.sp.unkId = 0; r.sp.bosId = -1; r.sp.eosId = -1; r.sp.padId = -1;
    llamaStyleNormalization(r.sp);
    r.sp.modelType = "bpe";
    r.sp.addDummyPrefix = false;
    r.sp.userDefinedSymbols = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};  // 1, 2, 3
    r.tokenizerConfig = {{"add_bos_token", false}, {"add_eos_token", false}, {"bos_token", nullptr},
                         {"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"}, {"unk_token", nullptr},
                         {"chat_template", kChatMLTemplate}, {"tokenizer_class", "Qwen2Tokenizer"}};
    r.specialTokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  } else {
    std::string known;
    for (const auto& n : tinyFamilies()) known += (known.empty() ? "" : ", ") + n;
    throw Error("make-tiny", "unknown family '" + f + "'", "choose one of: " + known);
  }
  r.config["torch_dtype"] = dtypeField(o.dtype.value_or(r.dtype));
  r.config["transformers_version"] = "4.46.0";
  r.config["use_cache"] = true;
  r.config["vocab_size"] = *o.vocab;
  r.generation["transformers_version"] = "4.46.0";
  r.sp.vocabSize = static_cast<int>(*o.vocab);
  r.sp.seed = o.seed + 1;
  if (o.dtype) r.dtype = *o.dtype;
  return r;
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

void writeJson(const fs::path& p, const ordered_json& j) {
  std::ofstream f(p);
  f << j.dump(2) << "\n";
  if (!f) throw Error(p.string(), "cannot write");
}

bool endsWith(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// The value a weight starts from: norms near their identity (1, or 0 for Gemma's 1 + w), biases
// and matrices small random. Random parts are seeded per tensor name, so no order matters.
at::Tensor initTensor(const ExpectedTensor& e, const ModelConfig& c, const TinyOptions& o) {
  auto gen = at::detail::createCPUGenerator(o.seed * 1000003ull + fnv1a(e.name));
  at::Tensor noise = at::normal(0.0, 1.0, e.shape, gen, at::TensorOptions().dtype(at::kFloat));
  const bool isNorm = e.name.find("norm") != std::string::npos || e.name.find(".ln_") != std::string::npos ||
                      e.name.rfind("transformer.ln_f", 0) == 0;
  if (isNorm && endsWith(e.name, ".weight")) return (c.normAddsOne ? 0.0 : 1.0) + 0.1 * noise;
  if (endsWith(e.name, ".bias")) return 0.02 * noise;
  return o.initStd * noise;
}

}  // namespace

std::vector<std::string> tinyFamilies() { return {"llama", "mistral", "gemma2", "gpt2", "qwen2"}; }

void makeTinyCheckpoint(const std::string& outDirIn, const TinyOptions& o) {
  if (o.layers < 1 || o.hidden < 1 || o.heads < 1 || o.hidden % o.heads != 0 || o.intermediate < 1)
    throw Error("make-tiny", "sizes must be positive and hidden a multiple of heads");
  if (o.kvHeads < 1 || o.heads % o.kvHeads != 0) throw Error("make-tiny", "heads must be a multiple of kv-heads");
  TinyOptions opt = o;
  if (opt.family == "gpt2") opt.kvHeads = opt.heads;
  if (!opt.vocab) opt.vocab = 768;
  if (opt.family == "gemma2" && *opt.vocab < 640)
    throw Error("make-tiny", "gemma2 needs a vocab of at least 640 (108 special tokens, 256 bytes, the corpus characters)");
  if (!opt.variant.empty() && !(opt.family == "llama" && opt.variant == "llama3"))
    throw Error("make-tiny", "variant '" + opt.variant + "' is not known for family " + opt.family, "the llama family has variant llama3");
  TinyRecipe r = recipeFor(opt);

  fs::path outDir(outDirIn);
  std::error_code ec;
  if (fs::exists(outDir, ec) && !opt.force)
    throw Error(outDirIn, "already exists", "pass --force to replace it");
  fs::path parent = outDir.has_parent_path() ? outDir.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  fs::path work = parent / (outDir.filename().string() + ".partial-" + std::to_string(::getpid()));
  fs::remove_all(work, ec);
  fs::create_directories(work, ec);
  if (ec) throw Error(work.string(), "cannot create: " + ec.message());
  try {
    // Tokenizer first: the vocab it really has decides the embedding rows.
    if (opt.withTokenizer) {
      std::vector<std::string> corpus = makeJapaneseCorpus(opt.seed, 3000);
      for (auto& line : chatCorpus()) corpus.push_back(std::move(line));
      trainSentencePiece(corpus, (work / "tokenizer").string(), r.sp);
      fs::remove(work / "tokenizer.vocab", ec);
      auto tok = Tokenizer::fromFolder(work.string());
      ordered_json added = ordered_json::object();
      for (const auto& t : r.specialTokens) {
        int id = tok->pieceToId(t);
        KH_ASSERT(id >= 0, "special token " + t + " missing from the trained model");
        added[std::to_string(id)] = {{"content", t}, {"lstrip", false}, {"normalized", false},
                                     {"rstrip", false}, {"single_word", false}, {"special", true}};
      }
      ordered_json tc = r.tokenizerConfig;
      tc["added_tokens_decoder"] = added;
      tc["clean_up_tokenization_spaces"] = false;
      tc["model_max_length"] = r.config.contains("n_positions") ? r.config["n_positions"] : r.config["max_position_embeddings"];
      tc["sp_model_kwargs"] = ordered_json::object();
      writeJson(work / "tokenizer_config.json", tc);
      ordered_json stm = ordered_json::object();
      for (const char* k : {"bos_token", "eos_token", "pad_token", "unk_token", "additional_special_tokens"})
        if (tc.contains(k) && !tc[k].is_null()) stm[k] = tc[k];
      writeJson(work / "special_tokens_map.json", stm);
    }
    writeJson(work / "config.json", r.config);
    writeJson(work / "generation_config.json", r.generation);

    const std::string where = (work / "config.json").string();
    const FamilySpec& fam = familyFor(r.config, where);
    ModelConfig cfg = fam.parse(r.config, where);
    std::vector<ExpectedTensor> layout;
    for (auto& e : fam.layout(cfg))
      if (!e.optional) layout.push_back(e);
    std::vector<TensorSpec> plan;
    for (const auto& e : layout) plan.push_back({e.name, r.dtype, e.shape});
    WriterOptions wo;
    wo.shardBytes = opt.shardBytes;
    SafetensorsWriter w(work.string(), plan, wo);
    const auto type = toScalarType(r.dtype, "make-tiny");
    for (const auto& e : layout) w.write(e.name, initTensor(e, cfg, opt).to(type).contiguous());
    w.finish();

    if (fs::exists(outDir, ec)) fs::remove_all(outDir, ec);
    fs::rename(work, outDir, ec);
    if (ec) throw Error(outDirIn, "cannot move the finished folder into place: " + ec.message());
  } catch (...) {
    fs::remove_all(work, ec);
    throw;
  }
}

}  // namespace kh
