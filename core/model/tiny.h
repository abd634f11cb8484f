// Tiny random checkpoints of each family with exactly the real tensor names, layouts, config
// fields and tokenizer files (a SentencePiece model trained on generated Japanese text), for
// tests and for users' own experiments (`kumihimo-cli make-tiny`). Sizes are tiny; nothing else is.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/io/safetensors_header.h"

namespace kh {

struct TinyOptions {
  std::string family = "llama";        // a registry name: llama, mistral, gemma2, gpt2, qwen2
  uint64_t seed = 0;
  std::optional<st::DType> dtype;      // default: the real model's (bf16; fp16 for GPT-2)
  int64_t layers = 4;
  int64_t hidden = 64;
  int64_t heads = 4;
  int64_t kvHeads = 2;                 // GPT-2 always uses heads
  int64_t intermediate = 128;
  std::optional<int64_t> vocab;        // SentencePiece pieces; default 768 (room for 256 byte pieces, Gemma2's 108 specials and the corpus characters)
  int64_t slidingWindow = 16;          // Gemma2 and Mistral; small so short tests cross it
  double initStd = 0.05;
  std::optional<bool> tied;            // default: the real model's
  uint64_t shardBytes = 0;             // 0 = one model.safetensors
  bool withTokenizer = true;
  // family "llama" only: "llama3" writes Meta-Llama-3-Instruct's special tokens (<|begin_of_text|>,
  // <|start_header_id|>, <|end_header_id|>, <|eot_id|>), chat template and stop ids instead of llm-jp-3's.
  std::string variant;
  bool force = false;                  // replace an existing output folder
};

// Writes the model folder to `outDir` atomically (built beside it, renamed when complete).
// Throws kh::Error for an unknown family or an existing folder (unless force).
void makeTinyCheckpoint(const std::string& outDir, const TinyOptions& options);

// The registry names make-tiny accepts.
std::vector<std::string> tinyFamilies();

}  // namespace kh
