// Fine-tuning data and labels (see data.h).
#include "core/train/data.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/text/tokenizer.h"

namespace kh::train {

using nlohmann::json;

static std::string textField(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (!it->is_string()) throw Error(source, std::string("\"") + key + "\" must be a string");
  return it->get<std::string>();
}

Conversation parseConversation(const std::string& line, const std::string& source) {
  json j;
  try {
    j = json::parse(line);
  } catch (const std::exception& e) {
    throw Error(source, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw Error(source, "a line must be a JSON object");
  Conversation c;
  c.source = source;
  auto list = [&](const char* key, const char* roleKey, const char* textKey) {
    const json& a = j.at(key);
    if (!a.is_array()) throw Error(source, std::string("\"") + key + "\" must be a list");
    for (const auto& m : a) {
      if (!m.is_object()) throw Error(source, std::string("every entry of \"") + key + "\" must be an object");
      std::string role = textField(m, roleKey, source);
      if (role == "human") role = "user";
      if (role == "gpt" || role == "model") role = "assistant";
      if (role != "system" && role != "user" && role != "assistant")
        throw Error(source, "unknown role '" + role + "'", "use system, user or assistant (ShareGPT: human, gpt)");
      c.messages.push_back({role, textField(m, textKey, source)});
    }
  };
  if (j.contains("messages")) {
    list("messages", "role", "content");
  } else if (j.contains("conversations")) {
    list("conversations", "from", "value");
  } else if (j.contains("instruction") && j.contains("output")) {
    std::string user = textField(j, "instruction", source);
    const std::string input = textField(j, "input", source);
    if (!input.empty()) user += "\n\n" + input;
    c.messages = {{"user", user}, {"assistant", textField(j, "output", source)}};
  } else if (j.contains("prompt") && j.contains("completion")) {
    c.messages = {{"user", textField(j, "prompt", source)}, {"assistant", textField(j, "completion", source)}};
  } else {
    throw Error(source, "not a known example shape",
                "use {\"messages\": [...]}, {\"conversations\": [...]}, {\"instruction\", \"output\"} or {\"prompt\", \"completion\"}");
  }
  if (std::none_of(c.messages.begin(), c.messages.end(), [](const ChatMessage& m) { return m.role == "assistant"; }))
    throw Error(source, "the conversation has no assistant turn", "there is nothing to train on");
  return c;
}

std::vector<Conversation> loadConversations(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open the data file");
  std::vector<Conversation> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    out.push_back(parseConversation(line, path + ":" + std::to_string(n)));
  }
  if (out.empty()) throw Error(path, "the data set is empty", "one JSON object per line");
  return out;
}

LabelMode parseLabelMode(const std::string& s) {
  if (s == "assistant" || s.empty()) return LabelMode::Assistant;
  if (s == "all") return LabelMode::All;
  if (s == "last_turn" || s == "last-turn") return LabelMode::LastTurn;
  throw Error("labels", "'" + s + "' is not one of assistant, all, last_turn");
}

std::string systemMessageNote(ChatFormat f) {
  switch (f) {
    case ChatFormat::Gemma: return "gemma has no system role: the system message is folded into the first user turn (system + blank line + user)";
    case ChatFormat::LlmJp3: return "llm-jp-3's template ignores the system message's text and writes its fixed preamble instead";
    case ChatFormat::Llama2: return "llama2 puts the system message inside the first [INST] as <<SYS>>";
    default: return "";
  }
}

static bool startsWith(const std::string& s, const std::string& p) { return s.size() >= p.size() && s.compare(0, p.size(), p) == 0; }

TokenizedExample tokenizeConversation(const Conversation& c, const TemplateContext& t, const Tokenizer& tok, const LabelOptions& o) {
  TokenizedExample ex;
  ex.source = c.source;
  auto render = [&](size_t n, bool gen) {
    std::vector<ChatMessage> m(c.messages.begin(), c.messages.begin() + static_cast<long>(n));
    ChatRenderOptions r = t.render;
    r.addGenerationPrompt = gen;
    try {
      return renderChat(t.format, m, r);
    } catch (const Error& e) {
      const bool system = std::any_of(c.messages.begin(), c.messages.end(), [](const ChatMessage& x) { return x.role == "system"; });
      if (system)
        throw Error(c.source, e.what(),
                    std::string("the ") + chatFormatName(t.format) +
                        " template cannot express a system message: remove it or fold it into the first user turn");
      throw Error(c.source, e.what());
    }
  };
  auto isStop = [&](int id) { return std::find(t.stopIds.begin(), t.stopIds.end(), id) != t.stopIds.end(); };
  size_t lastAssistant = 0;
  for (size_t i = 0; i < c.messages.size(); ++i)
    if (c.messages[i].role == "assistant") lastAssistant = i;
  std::string done;  // text already tokenized
  for (size_t i = 0; i <= lastAssistant; ++i) {
    if (c.messages[i].role != "assistant") continue;
    const std::string prompt = render(i, true), full = render(i + 1, false);
    if (!startsWith(prompt, done) || !startsWith(full, prompt))
      throw Error(c.source, std::string("the ") + chatFormatName(t.format) + " template does not render this conversation turn by turn");
    const bool labelTurn = o.mode == LabelMode::All || o.mode == LabelMode::Assistant || i == lastAssistant;
    const std::vector<int> promptIds = tok.encode(prompt.substr(done.size()), false);
    // The answer is tokenized in context (prompt + answer as one text), as a tokenizer sees the
    // whole conversation: a SentencePiece dummy prefix must not appear at the answer's start.
    // Only where the tokenizer merges across the boundary is the answer encoded on its own.
    const std::vector<int> together = tok.encode(full.substr(done.size()), false);
    std::vector<int> answer;
    if (together.size() >= promptIds.size() && std::equal(promptIds.begin(), promptIds.end(), together.begin()))
      answer.assign(together.begin() + static_cast<long>(promptIds.size()), together.end());
    else
      answer = tok.encode(full.substr(prompt.size()), false);
    for (int id : promptIds) {
      ex.ids.push_back(id);
      ex.trained.push_back(o.mode == LabelMode::All);
    }
    ex.answerStart.push_back(static_cast<int64_t>(ex.ids.size()));
    if (i == lastAssistant) ex.lastPrompt = ex.ids;
    // The answer is trained up to and including its end-of-turn token; what the template writes
    // after it (Gemma's "\n") is not part of what generation produces.
    int64_t stopAt = -1;
    for (int64_t k = static_cast<int64_t>(answer.size()) - 1; k >= 0; --k)
      if (isStop(answer[static_cast<size_t>(k)])) { stopAt = k; break; }
    int64_t last = -1;
    for (int64_t k = 0; k < static_cast<int64_t>(answer.size()); ++k) {
      const bool inAnswer = stopAt < 0 || k <= stopAt;
      bool train = o.mode == LabelMode::All || (labelTurn && inAnswer);
      if (k == stopAt && o.maskEndOfTurn) train = false;
      ex.ids.push_back(answer[static_cast<size_t>(k)]);
      ex.trained.push_back(train);
      if (train && inAnswer) last = static_cast<int64_t>(ex.ids.size()) - 1;
    }
    if (i == lastAssistant)
      ex.lastAnswer.assign(answer.begin(), answer.begin() + (stopAt < 0 ? static_cast<long>(answer.size()) : stopAt + 1));
    ex.lastTrained.push_back(labelTurn ? last : -2);  // -2: a turn the mode does not train
    done = full;
  }
  ex.fullLength = static_cast<int64_t>(ex.ids.size());
  if (ex.answerStart.front() >= o.maxLength)
    throw Error(c.source, "the prompt is " + std::to_string(ex.answerStart.front()) + " tokens, max_length is " + std::to_string(o.maxLength),
                "raise max_length or shorten the example");
  ex.turnCut.assign(ex.answerStart.size(), 0);
  if (ex.fullLength > o.maxLength) {
    ex.cut = true;
    ex.ids.resize(static_cast<size_t>(o.maxLength));
    ex.trained.resize(static_cast<size_t>(o.maxLength));
    for (size_t k = 0; k < ex.answerStart.size(); ++k) {
      if (ex.lastTrained[k] >= o.maxLength || ex.answerStart[k] >= o.maxLength) ex.turnCut[k] = 1;
    }
  }
  return ex;
}

static std::string pieceText(const Tokenizer& tok, int id) {
  std::string p = tok.idToPiece(id), out;
  for (char ch : p) out += ch == '\n' ? std::string("\\n") : std::string(1, ch);
  return out;
}

LabelAudit auditLabels(const std::vector<TokenizedExample>& xs, const std::vector<Conversation>& cs, const TemplateContext& t,
                       const Tokenizer& tok, int shown) {
  LabelAudit a;
  std::vector<int64_t> lengths;
  auto isStop = [&](int id) { return std::find(t.stopIds.begin(), t.stopIds.end(), id) != t.stopIds.end(); };
  std::vector<std::string> unterminated;
  for (const auto& x : xs) {
    ++a.examples;
    a.tokens += static_cast<int64_t>(x.ids.size());
    for (auto v : x.trained) a.trainedTokens += v;
    lengths.push_back(x.fullLength);
    if (x.cut) ++a.cutExamples;
    for (size_t k = 0; k < x.lastTrained.size(); ++k) {
      if (x.lastTrained[k] == -2) continue;  // not trained in this mode
      if (x.turnCut[k]) { ++a.cutTurns; continue; }
      ++a.assistantTurns;
      const int64_t last = x.lastTrained[k];
      if (last >= 0 && isStop(x.ids[static_cast<size_t>(last)])) ++a.terminatedTurns;
      else if (unterminated.size() < 3) unterminated.push_back(x.source + " turn " + std::to_string(k + 1));
    }
  }
  std::sort(lengths.begin(), lengths.end());
  if (!lengths.empty()) {
    a.minLength = lengths.front();
    a.maxLength = lengths.back();
    a.medianLength = lengths[lengths.size() / 2];
    a.p90Length = lengths[std::min(lengths.size() - 1, lengths.size() * 9 / 10)];
  }
  std::ostringstream o;
  o << "label audit (" << chatFormatName(t.format) << ", stop ids:";
  for (int id : t.stopIds) o << " " << id << " " << pieceText(tok, id);
  o << ")\n";
  o << "  examples " << a.examples << ", tokens " << a.tokens << ", trained tokens " << a.trainedTokens << "\n";
  o << "  tokens per example: min " << a.minLength << ", median " << a.medianLength << ", p90 " << a.p90Length << ", max "
    << a.maxLength << "; cut by max_length: " << a.cutExamples << " example(s), " << a.cutTurns << " answer(s)\n";
  char share[32];
  std::snprintf(share, sizeof share, "%.1f%%", 100.0 * a.stopShare());
  o << "  answers whose last trained token is a stop token: " << a.terminatedTurns << " / " << a.assistantTurns << " (" << share
    << ")" << (a.ok() ? "" : "  <-- MUST BE 100%: the model would not learn to stop") << "\n";
  for (const auto& u : unterminated) o << "    unterminated: " << u << "\n";
  for (int i = 0; i < shown && i < static_cast<int>(xs.size()); ++i) {
    const auto& x = xs[static_cast<size_t>(i)];
    o << "  example " << x.source << " ([x] = trained, the loss predicts it):\n    ";
    int col = 0;
    for (size_t k = 0; k < x.ids.size(); ++k) {
      std::string cell = (x.trained[k] ? "[" + pieceText(tok, x.ids[k]) + "]" : pieceText(tok, x.ids[k])) + " ";
      if (col + static_cast<int>(cell.size()) > 100) { o << "\n    "; col = 0; }
      o << cell;
      col += static_cast<int>(cell.size());
    }
    o << "\n";
  }
  // Training tokens before the last answer vs the chat path's prompt for it.
  if (!xs.empty() && !cs.empty()) {
    const auto& x = xs.front();
    std::vector<ChatMessage> m;
    size_t lastA = 0;
    for (size_t i = 0; i < cs.front().messages.size(); ++i)
      if (cs.front().messages[i].role == "assistant") lastA = i;
    m.assign(cs.front().messages.begin(), cs.front().messages.begin() + static_cast<long>(lastA));
    ChatRenderOptions r = t.render;
    r.addGenerationPrompt = true;
    const std::vector<int> chat = tok.encode(renderChat(t.format, m, r), false);
    const std::vector<int>& trainPart = x.lastPrompt;
    size_t k = 0;
    while (k < chat.size() && k < trainPart.size() && chat[k] == trainPart[k]) ++k;
    o << "  training vs chat rendering of " << x.source << " (tokens before the last answer): ";
    if (k == chat.size() && k == trainPart.size())
      o << "identical, " << k << " tokens\n";
    else
      o << "DIFFER at token " << k << ": training " << (k < trainPart.size() ? pieceText(tok, trainPart[k]) : "(end)") << ", chat "
        << (k < chat.size() ? pieceText(tok, chat[k]) : "(end)") << "\n";
  }
  bool anySystem = false;
  for (const auto& c : cs)
    for (const auto& msg : c.messages) anySystem |= msg.role == "system";
  if (anySystem && !systemMessageNote(t.format).empty()) o << "  note: " << systemMessageNote(t.format) << "\n";
  a.report = o.str();
  return a;
}

}  // namespace kh::train
