// A torch-free facade over one chat model for the GUI: load a model folder onto a device, answer
// a conversation with the model's own chat format, streaming text, with a cancel flag and stats;
// and retrieval-augmented chat: a document store attached to a conversation, its hits per turn with
// every score, re-thresholding of stored hits and the source of a chunk (RagStore, below).
// Must never include a torch, ATen or Qt header (widgets include it); errors are kh::Error.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kh {

// What the researcher sets for an answer (the CLI's sampling flags plus system prompt and format).
struct ChatSettings {
  std::string system;                // "" = no system prompt
  double temperature = 0.7;          // 0 = greedy
  double topP = 1.0;                 // (0, 1]
  double minP = 0.0;                 // [0, 1)
  double repetitionPenalty = 1.0;    // 1 = off
  int64_t topK = 0;                  // 0 = off
  int64_t maxNewTokens = 256;
  uint64_t seed = 0;
  std::string templateOverride;      // "" = the model's own chat format; else "gemma", "chatml", ...
};

// One turn of a conversation. (Named ChatTurn: core/text's ChatMessage is the renderer's type.)
struct ChatTurn {
  std::string role;     // "user" | "assistant"
  std::string content;  // UTF-8
};

struct ReplyStats {
  std::string text;                // the whole answer (what onText streamed)
  std::string stopReason;          // "eos", "stop string", "length", "cancelled"
  double timeToFirstTokenMs = 0;   // prompt in -> first new token out
  double tokensPerSecond = 0;      // decode speed after the first token
  int64_t promptTokens = 0;
  int64_t newTokens = 0;
};

class ChatEngine {
 public:
  // Opens and loads the folder on `device` ("cpu", "cuda", "cuda:1"). kh::Error for a folder that
  // is not a model, has no tokenizer or does not fit its config, or a device that does not exist.
  static std::unique_ptr<ChatEngine> load(const std::string& modelDir, const std::string& device = "cpu");
  ~ChatEngine();
  ChatEngine(const ChatEngine&) = delete;
  ChatEngine& operator=(const ChatEngine&) = delete;

  // One line: folder, family, chat format, dtype and device (computed at load; any thread).
  std::string describe() const;
  const std::string& modelDir() const;

  // Answers the last turn of `conversation` (alternating user/assistant, ending with a user turn).
  // `onText` receives text as it becomes final; `cancel` (optional) is checked between tokens and
  // makes the answer stop with stopReason "cancelled". kh::Error for a malformed conversation or
  // settings no sampler can use. Not thread-safe: one thread (the device's worker) at a time.
  ReplyStats reply(const std::vector<ChatTurn>& conversation, const ChatSettings& settings,
                   const std::function<void(const std::string&)>& onText = {},
                   const std::atomic<bool>* cancel = nullptr);

 private:
  struct Impl;
  explicit ChatEngine(std::unique_ptr<Impl> impl);
  std::string describeNow() const;
  std::unique_ptr<Impl> impl_;
};

// ---- Retrieval-augmented chat -------------------------------------------------------------------

// The prompt template retrieved chunks go into: {context} becomes the kept hits as "[1] text\n[2] ...",
// {question} the user's message. Default: the one `kumihimo-cli chat --rag` uses.
std::string defaultRagTemplate();
// Fills the template; with no kept hits (empty context) the user's message goes alone, as in the
// CLI. kh::Error when the template lacks {question}.
std::string fillRagTemplate(const std::string& promptTemplate, const std::string& context, const std::string& question);

// Which hits are kept: "relative" (score >= ratio x best), "zscore" (z >= zMin over the candidates)
// or "none"; the score is the reranker's where there is one, else the fused (or method's) score.
struct RagThreshold {
  std::string mode = "relative";
  double ratio = 0.5;
  double zMin = 0.0;
};

struct RagSettings {
  int k = 3;              // kept hits that go into the prompt (best first)
  int candidates = 50;    // top-k taken from each of dense and BM25 before fusion
  std::string method;     // "" = fused when the store has a dense index, else bm25
  double denseWeight = 1.0, bm25Weight = 1.0;
  RagThreshold threshold;
  std::string promptTemplate = defaultRagTemplate();
  // Optional decoder-LLM reranker (core/retrieval/rerank.h): a model folder whose yes/no log-odds
  // rescore the best rerankK candidates; "" = none. Needs a real instruction model to be useful.
  std::string rerankModel;
  int rerankK = 20;
  std::string rerankAnswers;  // "YES,NO"; "" = はい,いいえ else yes,no (each must be one token)
};

// One retrieved chunk with every score (core/retrieval's RetrievalHit, without its headers).
struct RagHit {
  std::string chunkId, docId, text;
  int64_t chunkKey = 0;
  std::optional<double> denseCosine;
  int denseRank = 0;  // 1-based; 0 = not among the dense candidates
  std::optional<double> bm25Score;
  int bm25Rank = 0;
  double fusedScore = 0;
  std::optional<double> rerankScore;
  bool kept = true;
  std::string threshold;   // why it was kept or dropped, e.g. "fused 0.0328 >= 0.5 x best 0.0328"
  bool inPrompt = false;   // went into the prompt of its turn (kept, and among the first k kept)
};

// What was retrieved for one user turn: kept with the message.
struct RagRetrieval {
  std::string storeDir, query, method;
  std::string reranker;          // the reranker's identity ("decoder-yesno:<folder>"), "" when none
  RagSettings settings;          // as they were for this turn
  std::vector<RagHit> hits;      // every candidate, best first, kept and dropped
  std::string prompt;            // the user turn as the model saw it (template filled)
};

// Re-applies another threshold to a turn's stored hits, without querying again (core's own
// threshold step); `inPrompt` stays what it was. kh::Error for an unknown mode.
std::vector<RagHit> rethreshold(const RagRetrieval& turn, const RagThreshold& threshold);

// Where a chunk came from, for "open source".
struct RagSource {
  std::string docId;
  std::string source;         // as recorded at import: a file, or "file.jsonl:LINE"
  std::string path;           // the file alone (absolute when it exists)
  int line = 0;               // JSONL line, 0 for a whole file
  std::string text;           // the document's text
  int64_t begin = 0, end = 0; // the chunk in `text`, code points [begin, end)
  size_t byteBegin = 0, byteEnd = 0;  // the same span in bytes of `text`
  std::string note;           // "" or why the text was rebuilt from the stored chunks
};

// The MeCab dictionary folder for stores embedded by ruri v1/v2 (BertJapaneseTokenizer): it beats
// $KUMIHIMO_MECAB_DIC and the search in the model folder and pip's unidic_lite; "" = search as
// usual. Process-wide, as the CLI's --mecab-dic; takes effect for the next RagStore::open.
void setMecabDictionary(const std::string& dir);

// A store whose indexes cannot be read (a corrupt or missing bm25.bin / dense.faiss) while its
// documents and chunks can: rebuildable, as `kumihimo-cli index rebuild` would. False for a store
// that opens, or one whose store.json itself is unreadable.
bool ragStoreNeedsRebuild(const std::string& dir);
// Rebuilds BM25 and the dense index from the stored chunks, embedding them again with the model
// the store recorded (kh::Error when that folder is gone). `progress`: (chunks embedded, total).
void rebuildRagStore(const std::string& dir, const std::function<void(size_t, size_t)>& progress = {});

// Imports text, Markdown and JSONL files and folders into the store in `dir` (created when missing),
// as `kumihimo-cli index add` with the store's chunking: changed documents only are redone, vanished
// ones removed. Embedded by `embedder` (DIR, encoder:DIR or decoder:DIR; "" = the model the store
// recorded, or BM25 only for a new store); a different one than the store's is refused, named.
// Returns ImportReport::summary(). `progress`: (chunks embedded, total).
std::string importIntoRagStore(const std::string& dir, const std::vector<std::string>& paths, const std::string& embedder,
                               const std::function<void(size_t, size_t)>& progress = {});

// A document store opened for chat (its embedder, when it has dense vectors, loaded with it).
// Thread-safe for concurrent const use after open (retrieve, source).
class RagStore {
 public:
  // Opens the store in `dir` with the embedder model folder the store recorded. kh::Error for a
  // folder that is no store (with a hint). A dense store whose embedder folder is gone is searched
  // with BM25 only, as the CLI does, and describe() says so.
  static std::shared_ptr<RagStore> open(const std::string& dir);
  ~RagStore();
  RagStore(const RagStore&) = delete;
  RagStore& operator=(const RagStore&) = delete;

  const std::string& dir() const;
  size_t documentCount() const;
  size_t chunkCount() const;
  std::string embedder() const;  // the embedder identity, "" for BM25 only
  std::string describe() const;  // "15 documents, 15 chunks, dense by ... (fused)" / "..., BM25 only"

  // Searches for the user's message and fills the template with the first settings.k kept hits.
  // With settings.rerankModel the reranker is loaded on first use and kept while that folder stays
  // the setting. kh::Error for an empty message, bad settings, a broken template or a reranker
  // folder that is not a usable model.
  RagRetrieval retrieve(const std::string& user, const RagSettings& settings) const;
  // The document a chunk belongs to, read from its source file (rebuilt from the stored chunks,
  // with a note, when the file is gone or changed). kh::Error for a chunk id the store lacks.
  RagSource source(const std::string& chunkId) const;

 private:
  struct Impl;
  explicit RagStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kh
