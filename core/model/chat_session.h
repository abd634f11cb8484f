// A conversation with one model: the chat format's rendering of system + turns, the stop ids that
// end an answer (generation_config's eos list plus the format's end-of-turn token), and replies
// generated through generate(). The CLI's chat and the workbench's chat pane share it.
// Never sends the model a prompt rendered any other way than its own chat format.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/model/generate.h"
#include "core/model/model_folder.h"
#include "core/text/chat_template.h"

namespace kh {

class ChatSession {
 public:
  // `templateOverride`: a format name ("gemma", "chatml", ...) or "" to detect it from the model.
  ChatSession(const ModelFolder& folder, std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tokenizer,
              const std::string& templateOverride = "");

  ChatFormat format() const { return format_; }
  const std::vector<int>& stopIds() const { return stopIds_; }
  std::string system;                  // "" = none
  std::vector<ChatMessage> turns;      // user/assistant, alternating
  SamplingOptions sampling;

  // Token ids of the conversation so far plus `user`, ready for the assistant's answer.
  std::vector<int> promptFor(const std::string& user) const;
  // Answers `user`, streaming text; both turns are kept (a cancelled answer is kept as far as it got).
  GenerationResult reply(const std::string& user, const std::function<void(const std::string&)>& onText = {},
                         const std::atomic<bool>* cancel = nullptr);
  void reset() { turns.clear(); }

 private:
  std::shared_ptr<const Model> model_;
  std::shared_ptr<const Tokenizer> tok_;
  ChatFormat format_;
  ChatRenderOptions render_;
  std::vector<int> stopIds_;
};

}  // namespace kh
