// --rerank MODEL_DIR [--rerank-k N] for retrieve, retrieval-eval and chat --rag: loads the
// decoder-LLM reranker (core/retrieval/rerank.h) and hooks it into the search options.
#include <iostream>
#include <memory>

#include "app/cli_commands.h"
#include "app/progress_line.h"
#include "core/error.h"
#include "core/retrieval/rerank.h"

namespace kh::cli {

void addRerankFlags(CLI::App* sub, RerankFlags& f) {
  sub->add_option("--rerank", f.model, "Decoder model folder that rescores the best fused candidates (yes/no log-odds)");
  sub->add_option("--rerank-k", f.k, "How many of the best fused candidates the reranker rescores")->default_val(20);
  sub->add_option("--rerank-answers", f.answers, "The reranker's answer words YES,NO (default はい,いいえ, else yes,no); each one token");
}

std::shared_ptr<retrieval::Reranker> attachReranker(const RerankFlags& f, retrieval::SearchOptions& o) {
  if (f.model.empty()) return nullptr;
  if (f.k < 1) throw Error("--rerank-k", "must be at least 1");
  retrieval::RerankOptions ro;
  ro.answers = retrieval::parseAnswerWords(f.answers);
  auto r = std::make_shared<retrieval::DecoderReranker>(f.model, ro);
  std::cerr << "reranking the best " << f.k << " candidates with " << f.model << " (answer '" << r->yesWord() << "' vs '"
            << r->noWord() << "')\n";
  o.reranker = r.get();
  o.rerankK = f.k;
  auto line = std::make_shared<ProgressLine>();
  o.rerankProgress = [line](size_t done, size_t total) {
    if (done == total) return line->clear();
    line->show(total ? static_cast<double>(done) / static_cast<double>(total) : -1.0,
               "reranking " + std::to_string(done) + "/" + std::to_string(total));
  };
  return r;
}

}  // namespace kh::cli
