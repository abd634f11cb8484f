// ChatSession (see chat_session.h).
#include "core/model/chat_session.h"

#include "core/error.h"

namespace kh {

ChatSession::ChatSession(const ModelFolder& folder, std::shared_ptr<const Model> model,
                         std::shared_ptr<const Tokenizer> tokenizer, const std::string& templateOverride)
    : model_(std::move(model)), tok_(std::move(tokenizer)) {
  format_ = resolveChatFormat(*tok_, templateOverride, folder.dir);
  render_.bosToken = tok_->bosToken();
  render_.eosToken = tok_->eosToken();
  for (const auto& s : folder.stopTokens) stopIds_.push_back(s.id);
  // The format's end of turn must stop generation even when generation_config does not list it.
  const std::string eot = endOfTurnText(format_, render_);
  const int id = tok_->pieceToId(eot);
  if (id >= 0 && std::find(stopIds_.begin(), stopIds_.end(), id) == stopIds_.end()) stopIds_.push_back(id);
}

std::vector<int> ChatSession::promptFor(const std::string& user) const {
  std::vector<ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.insert(messages.end(), turns.begin(), turns.end());
  messages.push_back({"user", user});
  ChatRenderOptions o = render_;
  o.addGenerationPrompt = true;
  // The rendered text already holds bos where the format wants it: add no special tokens again.
  return tok_->encode(renderChat(format_, messages, o), /*addSpecial=*/false);
}

GenerationResult ChatSession::reply(const std::string& user, const std::function<void(const std::string&)>& onText,
                                    const std::atomic<bool>* cancel) {
  if (user.empty()) throw Error("chat", "the message is empty");
  GenerationResult r = generate(*model_, *tok_, promptFor(user), stopIds_, sampling, onText, cancel);
  turns.push_back({"user", user});
  turns.push_back({"assistant", r.text});
  return r;
}

}  // namespace kh
