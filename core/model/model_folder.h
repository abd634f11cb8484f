// A Hugging Face model folder as Kumihimo sees it: typed config, generation config, lazy
// weights, tokenizer files, and a report of how the weights match the family's layout.
// Opening reads only headers and JSON: no tensor data is touched.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "core/model/config.h"

namespace kh {

class Tokenizer;

struct LayoutReport {
  std::vector<std::string> missing;     // expected, not in the checkpoint
  std::vector<std::string> unexpected;  // in the checkpoint, not expected
  std::vector<std::string> misshaped;   // "name: [a, b], expected [c, d]"
  std::vector<std::string> ignored;     // known non-weights (rotary buffers, mask buffers)
  size_t matched = 0;
  bool ok() const { return missing.empty() && unexpected.empty() && misshaped.empty(); }
  std::string summary() const;  // one line naming the first problems
};

LayoutReport checkLayout(const FamilySpec& family, const ModelConfig& config, const CheckpointWeights& weights);

struct StopToken {
  int id;
  std::string token;   // its text, "" when the tokenizer is unknown
  std::string source;  // "generation_config.json", "config.json", "chat template end of turn"
};

struct ModelFolder {
  std::string dir;
  const FamilySpec* family = nullptr;
  ModelConfig config;
  GenerationConfig generation;
  std::shared_ptr<CheckpointWeights> weights;
  LayoutReport layout;
  std::vector<std::string> tokenizerFiles;  // which of the known tokenizer files are present
  std::vector<StopToken> stopTokens;        // every id generation must stop on
  // The folder's tokenizer, loaded once (SentencePiece or tokenizer.json); null when the folder
  // has none or it cannot be loaded, and then `tokenizerError` says why.
  std::shared_ptr<Tokenizer> tokenizer;
  std::string tokenizerError;

  // Throws kh::Error for a missing/invalid config, unknown architecture, unreadable or unsafe
  // weights. A layout mismatch does not throw: see `layout` (loaders refuse it, inspect shows it).
  static ModelFolder open(const std::string& dir);
  // kh::Error naming the folder and the first mismatches when the layout is not exact.
  void requireExactLayout() const;
  // The tokenizer, or kh::Error naming the folder and why there is none.
  std::shared_ptr<Tokenizer> requireTokenizer() const;
};

}  // namespace kh
