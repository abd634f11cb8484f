// ChatEngine (see chat_engine.h): ModelFolder + Model + ChatSession behind a torch-free header.
#include "core/jobs/chat_engine.h"

#include <c10/core/ScalarType.h>

#include <sstream>

#include "core/error.h"
#include "core/model/chat_session.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"

namespace kh {

struct ChatEngine::Impl {
  ModelFolder folder;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::shared_ptr<const Model> model;
  std::string description;
};

ChatEngine::ChatEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChatEngine::~ChatEngine() = default;

std::unique_ptr<ChatEngine> ChatEngine::load(const std::string& modelDir, const std::string& device) {
  if (modelDir.empty()) throw Error("model", "no model folder given", "pick a folder with config.json");
  auto impl = std::make_unique<Impl>();
  impl->folder = ModelFolder::open(modelDir);
  impl->tokenizer = impl->folder.requireTokenizer();
  RunOptions ro;
  ro.device = device.empty() ? "cpu" : device;
  impl->model = Model::load(impl->folder, ro);
  auto engine = std::unique_ptr<ChatEngine>(new ChatEngine(std::move(impl)));
  engine->impl_->description = engine->describeNow();
  return engine;
}

std::string ChatEngine::describe() const { return impl_->description; }

const std::string& ChatEngine::modelDir() const { return impl_->folder.dir; }

std::string ChatEngine::describeNow() const {
  std::string format;
  try {
    format = chatFormatName(ChatSession(impl_->folder, impl_->model, impl_->tokenizer).format());
  } catch (const Error&) {
    format = "unrecognised";  // a template override still works; reply() says why otherwise
  }
  std::ostringstream o;
  o << impl_->folder.dir << " (" << impl_->model->config().modelType << ", " << format << " chat format, " << c10::toString(impl_->model->dtype()) << " on " << impl_->model->device() << ")";
  return o.str();
}

ReplyStats ChatEngine::reply(const std::vector<ChatTurn>& conversation, const ChatSettings& settings,
                             const std::function<void(const std::string&)>& onText, const std::atomic<bool>* cancel) {
  if (conversation.empty() || conversation.back().role != "user")
    throw Error("chat", "the conversation must end with a user turn");
  for (size_t i = 0; i < conversation.size(); ++i) {
    const char* want = i % 2 == 0 ? "user" : "assistant";
    if (conversation[i].role != want)
      throw Error("chat turn " + std::to_string(i + 1),
                  "role '" + conversation[i].role + "' where '" + want + "' was expected",
                  "turns alternate user/assistant; the system prompt goes in the settings");
  }
  ChatSession session(impl_->folder, impl_->model, impl_->tokenizer, settings.templateOverride);
  session.system = settings.system;
  for (size_t i = 0; i + 1 < conversation.size(); ++i)
    session.turns.push_back({conversation[i].role, conversation[i].content});
  SamplingOptions& s = session.sampling;
  s.temperature = settings.temperature;
  s.topP = settings.topP;
  s.minP = settings.minP;
  s.repetitionPenalty = settings.repetitionPenalty;
  s.topK = settings.topK;
  s.maxNewTokens = settings.maxNewTokens;
  s.seed = settings.seed;
  validateSampling(s);
  const GenerationResult r = session.reply(conversation.back().content, onText, cancel);
  ReplyStats st;
  st.text = r.text;
  st.stopReason = stopReasonName(r.reason);
  st.timeToFirstTokenMs = r.timeToFirstTokenMs;
  st.tokensPerSecond = r.tokensPerSecond;
  st.promptTokens = r.promptTokens;
  st.newTokens = static_cast<int64_t>(r.ids.size());
  return st;
}

}  // namespace kh
