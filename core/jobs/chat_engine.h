// A torch-free facade over one chat model for the GUI: load a model folder onto a device, answer
// a conversation with the model's own chat format, streaming text, with a cancel flag and stats.
// Must never include a torch, ATen or Qt header (widgets include it); errors are kh::Error.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
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

}  // namespace kh
