// The subcommands of kumihimo-cli. Errors are thrown as kh::Error and turned into one line on
// stderr and a non-zero exit by main; nothing here prints an error itself.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "core/model/model_folder.h"

namespace kh {
class Model;
class Tokenizer;
}  // namespace kh
namespace kh::retrieval {
class Reranker;
struct SearchOptions;
}  // namespace kh::retrieval

namespace kh::cli {

// A parsed subcommand leaves its work in `run`; main calls it once global settings are applied.
using Action = std::function<void()>;
void addInspect(CLI::App& app, Action& run);
void addMakeTiny(CLI::App& app, Action& run);
void addTokenize(CLI::App& app, Action& run);
void addLogits(CLI::App& app, Action& run);
void addGenerate(CLI::App& app, Action& run);
void addChat(CLI::App& app, Action& run);
void addMerge(CLI::App& app, Action& run);
void addEvolve(CLI::App& app, Action& run);
void addResume(CLI::App& app, Action& run);
void addEval(CLI::App& app, Action& run);  // app/cli_eval.cpp
void addIndex(CLI::App& app, Action& run);          // app/cli_retrieval.cpp
void addRetrieve(CLI::App& app, Action& run);       // app/cli_retrieval.cpp
void addRetrievalEval(CLI::App& app, Action& run);  // app/cli_retrieval.cpp
// --rerank MODEL_DIR and --rerank-k N (app/cli_rerank.cpp).
struct RerankFlags {
  std::string model;  // "" = no reranker
  int k = 20;
  std::string answers;  // "YES,NO" instead of the default はい,いいえ / yes,no
};
void addRerankFlags(CLI::App* sub, RerankFlags& f);
// Loads the reranker named by the flags (nullptr for none; kh::Error for a folder that is not a
// usable model) and sets o.reranker, o.rerankK and a progress line; keep the result alive while o is used.
std::shared_ptr<retrieval::Reranker> attachReranker(const RerankFlags& f, retrieval::SearchOptions& o);
// chat --rag STORE (app/cli_retrieval.cpp): maps a user message to the message sent to the model,
// the store's top kept chunks (fused with the store's recorded embedder when it exists, else BM25,
// reranked when `rerank` names a model) placed before the question; names the chunks it used on stderr.
// --mecab-dic DIR: the MeCab dictionary for BertJapaneseTokenizer encoders (ruri v1/v2), process-wide
// (app/cli_retrieval.cpp).
void addMecabDicFlag(CLI::App* sub);
// chat --rag: searches the store for each message and returns the prompt to send. templateFile:
// the prompt template ("" = defaultRagTemplate()); logFile: one JSON line appended per turn
// (message, prompt, hits with every score), "" = none.
std::function<std::string(const std::string&)> makeRagAugmenter(const std::string& store, int k, const RerankFlags& rerank = {},
                                                                const std::string& templateFile = "",
                                                                const std::string& logFile = "");
void addTrain(CLI::App& app, Action& run);  // app/cli_train.cpp
// `resume RUN` on a training run folder (state.json kind: train) goes here instead of evolution.
void resumeTrainingRun(const std::string& runDir);

// The model every inference command runs: folder, tokenizer and weights on the chosen device.
struct ModelArgs {
  std::string dir, device = "cpu", dtype;
  std::string adapter;  // PEFT LoRA adapter folder applied at run time ("" = none)
};
// MODEL, --device, --dtype, --adapter.
void addModelArgs(CLI::App* sub, ModelArgs& m);
struct LoadedModel {
  ModelFolder folder;
  std::shared_ptr<Tokenizer> tokenizer;
  std::shared_ptr<Model> model;
};
LoadedModel loadModel(const ModelArgs& m);

}  // namespace kh::cli
