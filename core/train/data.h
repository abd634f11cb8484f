// Fine-tuning data: JSONL conversations (OpenAI messages, ShareGPT, Alpaca, prompt/completion)
// rendered with the model's own chat template through renderChat, the code path chat uses, then
// tokenized turn by turn with per-token label states, and the label audit that refuses a run whose
// answers would not learn to stop. Must never mask a label by token id (pad may equal eos).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/text/chat_template.h"

namespace kh {

class Tokenizer;

namespace train {

// One conversation and where it came from ("data.jsonl:12").
struct Conversation {
  std::vector<ChatMessage> messages;
  std::string source;
};

// Reads a JSONL file; each line one of
//   {"messages": [{"role": "system|user|assistant", "content": ...}, ...]}          (OpenAI)
//   {"conversations": [{"from": "system|human|user|gpt|assistant", "value": ...}]}   (ShareGPT)
//   {"instruction": ..., "input": ... (optional), "output": ...}                      (Alpaca)
//   {"prompt": ..., "completion": ...}
// Blank lines are skipped. kh::Error("FILE:LINE", cause) for malformed JSON, an unknown shape, an
// unknown role or a conversation with no assistant turn; kh::Error(FILE) for an empty data set.
std::vector<Conversation> loadConversations(const std::string& path);
// The same for one line's JSON text (tests, in-memory data).
Conversation parseConversation(const std::string& jsonLine, const std::string& source);

enum class LabelMode { Assistant, All, LastTurn };  // "assistant" (default), "all", "last_turn"
LabelMode parseLabelMode(const std::string& name);  // kh::Error naming the option

struct LabelOptions {
  LabelMode mode = LabelMode::Assistant;
  int64_t maxLength = 512;     // tokens; longer examples are cut (counted in the audit)
  bool maskEndOfTurn = false;  // simulates the classic bug (for tests and demonstrations only)
};

// How a conversation is turned into tokens for a family: the format, its render options, and every
// id that ends an answer (ChatSession's stop ids: generation_config's eos list + end of turn).
struct TemplateContext {
  ChatFormat format;
  ChatRenderOptions render;  // bos/eos text; addGenerationPrompt is set per call
  std::vector<int> stopIds;
};

// A tokenized conversation. trained[i]: the loss includes predicting ids[i] from ids[0..i).
struct TokenizedExample {
  std::vector<int> ids;
  std::vector<uint8_t> trained;
  std::vector<int64_t> answerStart;  // per assistant turn: index of its first token
  std::vector<int64_t> lastTrained;  // per assistant turn: index of its last trained token (-1: none)
  std::vector<uint8_t> turnCut;      // per assistant turn: cut by maxLength
  int64_t fullLength = 0;            // tokens before cutting
  bool cut = false;
  std::string source;
  // For evaluation: the chat path's prompt for the last assistant turn, and that turn's answer ids.
  std::vector<int> lastPrompt, lastAnswer;
};

// Renders and tokenizes; the text before each assistant answer is exactly renderChat(messages so far,
// addGenerationPrompt) tokenized as ChatSession::promptFor does. Messages after the last assistant
// turn are dropped. kh::Error(source, ...) when the template refuses the conversation (e.g. Mistral
// with a system message) or the first prompt alone is longer than maxLength.
TokenizedExample tokenizeConversation(const Conversation& c, const TemplateContext& t, const Tokenizer& tok,
                                      const LabelOptions& o);

// What a template does with a system message, when it does something other than keep it (one line;
// "" when it keeps it): Gemma folds it into the first user turn, llm-jp-3 writes a fixed preamble.
std::string systemMessageNote(ChatFormat f);

struct LabelAudit {
  int64_t examples = 0, tokens = 0, trainedTokens = 0;
  int64_t assistantTurns = 0;   // complete (not cut) turns
  int64_t terminatedTurns = 0;  // ... whose last trained token is a stop id
  int64_t cutTurns = 0, cutExamples = 0;
  int64_t minLength = 0, medianLength = 0, p90Length = 0, maxLength = 0;
  double stopShare() const { return assistantTurns ? double(terminatedTurns) / double(assistantTurns) : 0.0; }
  bool ok() const { return assistantTurns > 0 && terminatedTurns == assistantTurns; }
  std::string report;  // the printable audit (examples with label states, stop share, lengths, diff)
};

// `shown`: how many examples to print token by token. The diff compares the first example's training
// tokens before its last answer with the chat path's prompt for it (tokens are identical by construction
// for the first turn; later turns can differ where a tokenizer merges across a turn boundary).
LabelAudit auditLabels(const std::vector<TokenizedExample>& examples, const std::vector<Conversation>& conversations,
                       const TemplateContext& t, const Tokenizer& tok, int shown = 2);

}  // namespace train
}  // namespace kh
