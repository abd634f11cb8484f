// Chat template renderers (see chat_template.h): each function mirrors one published Jinja template
// line by line, so that a change can be checked against it. Must never approximate a template: where
// the real one raises, so do we; where it renders something odd, we render the same odd thing.
#include "core/text/chat_template.h"

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "core/text/tokenizer.h"

namespace kh {

namespace {

constexpr const char* kLlmJp3Preamble = "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。";
constexpr const char* kQwen2DefaultSystem = "You are a helpful assistant.";
constexpr const char* kAlternate = "Conversation roles must alternate user/assistant/user/assistant/...";

std::string where(ChatFormat f) { return std::string("chat template ") + chatFormatName(f); }

// Decodes one UTF-8 code point at s[i]; returns its length, 0 when the bytes there are not valid
// UTF-8 (overlong forms, surrogates and values above U+10FFFF included).
size_t decodeUtf8(std::string_view s, size_t i, uint32_t& cp) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  size_t n;
  uint32_t min;
  if (c < 0x80) { cp = c; return 1; }
  if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; min = 0x80; }
  else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; min = 0x800; }
  else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; min = 0x10000; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

// Python's str.isspace() (and so str.strip() and Jinja's |trim with no argument), Python 3.11.
bool isPythonSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// str.strip() on valid UTF-8: drops leading and trailing whitespace code points.
std::string pyStrip(std::string_view s) {
  std::vector<std::pair<size_t, size_t>> cps;  // (offset, length) of each code point
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    const size_t n = decodeUtf8(s, i, cp);
    KH_ASSERT(n > 0, "content was validated as UTF-8");
    cps.emplace_back(i, isPythonSpace(cp) ? 0 : n);  // length 0 marks whitespace
    i += n;
  }
  size_t first = 0, last = cps.size();
  while (first < last && cps[first].second == 0) ++first;
  while (last > first && cps[last - 1].second == 0) --last;
  if (first == last) return {};
  const size_t begin = cps[first].first;
  const size_t end = cps[last - 1].first + cps[last - 1].second;
  return std::string(s.substr(begin, end - begin));
}

void checkMessages(ChatFormat f, const std::vector<ChatMessage>& messages) {
  if (messages.empty()) throw Error(where(f), "the conversation has no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      throw Error(where(f), "message " + std::to_string(i) + " has role '" + m.role + "'",
                  "roles are system, user and assistant");
    for (size_t k = 0; k < m.content.size();) {
      uint32_t cp;
      const size_t n = decodeUtf8(m.content, k, cp);
      if (n == 0)
        throw Error(where(f), "message " + std::to_string(i) + " is not valid UTF-8 at byte " + std::to_string(k));
      k += n;
    }
  }
}

// The alternation check of the Gemma, Llama-2 and Mistral templates:
// (role == 'user') != (loop.index0 % 2 == 0) raises.
void checkAlternates(ChatFormat f, const ChatMessage& m, size_t index0, size_t reportIndex) {
  if ((m.role == "user") != (index0 % 2 == 0))
    throw Error(where(f), std::string(kAlternate) + " (message " + std::to_string(reportIndex) + " is " + m.role + ")");
}

// gemma-2-*-it:
// {{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}
// {% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}raise...{% endif %}
// {% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}
// {{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}
// {% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}
// plus our folding of a leading system message into the first user turn, before the template runs.
std::string renderGemma(const std::vector<ChatMessage>& in, const ChatRenderOptions& o) {
  const ChatFormat f = ChatFormat::Gemma;
  std::vector<ChatMessage> msgs = in;
  size_t shift = 0;  // messages[i] here is in[i + shift], for error messages
  if (msgs[0].role == "system") {
    if (msgs.size() < 2 || msgs[1].role != "user")
      throw Error(where(f), "System role not supported: Gemma has no system role, and the system message "
                  "can only be folded into a user turn right after it",
                  "put the system instructions in the first user message");
    msgs[1].content = msgs[0].content + "\n\n" + msgs[1].content;
    msgs.erase(msgs.begin());
    shift = 1;
  }
  std::string out = o.bosToken;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    checkAlternates(f, m, i, i + shift);
    const std::string role = m.role == "assistant" ? "model" : m.role;
    out += "<start_of_turn>" + role + "\n" + pyStrip(m.content) + "<end_of_turn>\n";
  }
  if (o.addGenerationPrompt) out += "<start_of_turn>model\n";
  return out;
}

// llm-jp-3-*-instruct:
// {{bos_token}}{% for message in messages %}{% if message['role'] == 'user' %}{{ '\n\n### 指示:\n' + message['content'] }}
// {% elif message['role'] == 'system' %}{{ '以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。' }}
// {% elif message['role'] == 'assistant' %}{{ '\n\n### 応答:\n' + message['content'] + eos_token }}{% endif %}
// {% if loop.last and add_generation_prompt %}{{ '\n\n### 応答:\n' }}{% endif %}{% endfor %}
std::string renderLlmJp3(const std::vector<ChatMessage>& msgs, const ChatRenderOptions& o) {
  std::string out = o.bosToken;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    if (m.role == "user") out += "\n\n### 指示:\n" + m.content;
    else if (m.role == "system") out += kLlmJp3Preamble;
    else out += "\n\n### 応答:\n" + m.content + o.eosToken;
    if (i + 1 == msgs.size() && o.addGenerationPrompt) out += "\n\n### 応答:\n";
  }
  return out;
}

// Llama-2-*-chat:
// {% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}
// {% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}
// {% for message in loop_messages %}(alternation check)
// {% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}
// {% else %}{% set content = message['content'] %}{% endif %}
// {% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}
// {% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}
// (An empty system content is still != false in Jinja, so it still writes the <<SYS>> block.)
std::string renderLlama2(const std::vector<ChatMessage>& msgs, const ChatRenderOptions& o) {
  const ChatFormat f = ChatFormat::Llama2;
  const bool hasSystem = msgs[0].role == "system";
  const size_t start = hasSystem ? 1 : 0;
  std::string out;
  for (size_t i = start; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    const size_t index0 = i - start;
    checkAlternates(f, m, index0, i);
    std::string content = m.content;
    if (index0 == 0 && hasSystem) content = "<<SYS>>\n" + msgs[0].content + "\n<</SYS>>\n\n" + m.content;
    if (m.role == "user") out += o.bosToken + "[INST] " + pyStrip(content) + " [/INST]";
    else if (m.role == "assistant") out += " " + pyStrip(content) + " " + o.eosToken;
    // a system message after the first renders nothing, as in the real template
  }
  return out;
}

// Meta-Llama-3-*-Instruct (3.0):
// {% set loop_messages = messages %}{% for message in loop_messages %}
// {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}
// {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}
// {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
std::string renderLlama3(const std::vector<ChatMessage>& msgs, const ChatRenderOptions& o) {
  std::string out = o.bosToken;  // loop.index0 == 0 exists: checkMessages refused an empty conversation
  for (const auto& m : msgs)
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + pyStrip(m.content) + "<|eot_id|>";
  if (o.addGenerationPrompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Mistral-7B-Instruct-v0.2 (as first published):
// {{ bos_token }}{% for message in messages %}(alternation check)
// {% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}
// {% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}
// {% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}
std::string renderMistral(const std::vector<ChatMessage>& msgs, const ChatRenderOptions& o) {
  const ChatFormat f = ChatFormat::Mistral;
  std::string out = o.bosToken;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    checkAlternates(f, m, i, i);
    if (m.role == "user") out += "[INST] " + m.content + " [/INST]";
    else if (m.role == "assistant") out += m.content + o.eosToken;
    else
      throw Error(where(f), "Only user and assistant roles are supported! (message " + std::to_string(i) + " is " +
                  m.role + ")", "Mistral-7B-Instruct-v0.2 has no system role: put the instructions in the first user message");
  }
  return out;
}

// Qwen2-*-Instruct (ChatML):
// {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}
// {{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}
// {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}
// {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
std::string renderChatML(const std::vector<ChatMessage>& msgs, const ChatRenderOptions& o) {
  std::string out;
  if (msgs[0].role != "system") out += std::string("<|im_start|>system\n") + kQwen2DefaultSystem + "<|im_end|>\n";
  for (const auto& m : msgs) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (o.addGenerationPrompt) out += "<|im_start|>assistant\n";
  return out;
}

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

}  // namespace

const char* chatFormatName(ChatFormat f) {
  switch (f) {
    case ChatFormat::Gemma: return "gemma";
    case ChatFormat::LlmJp3: return "llm-jp-3";
    case ChatFormat::Llama2: return "llama2";
    case ChatFormat::Llama3: return "llama3";
    case ChatFormat::Mistral: return "mistral";
    case ChatFormat::ChatML: return "chatml";
  }
  KH_ASSERT(false, "unhandled ChatFormat");
  return "";
}

const std::vector<ChatFormat>& allChatFormats() {
  static const std::vector<ChatFormat> all = {ChatFormat::Gemma,  ChatFormat::LlmJp3,  ChatFormat::Llama2,
                                              ChatFormat::Llama3, ChatFormat::Mistral, ChatFormat::ChatML};
  return all;
}

std::string chatFormatNames() {
  std::string s;
  for (ChatFormat f : allChatFormats()) s += (s.empty() ? "" : ", ") + std::string(chatFormatName(f));
  return s;
}

std::optional<ChatFormat> parseChatFormat(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
  for (ChatFormat f : allChatFormats())
    if (lower == chatFormatName(f)) return f;
  return std::nullopt;
}

std::optional<ChatFormat> detectChatFormat(const std::string& t) {
  // Gemma 1/2; Gemma 3 folds the system prompt itself (first_user_prefix) and takes content lists.
  if (has(t, "<start_of_turn>") && has(t, "<end_of_turn>"))
    return has(t, "first_user_prefix") ? std::nullopt : std::optional(ChatFormat::Gemma);
  // llm-jp-3 instruct: its fixed preamble and both markers (other Japanese Alpaca-style templates
  // word and space them differently).
  if (has(t, "### 指示:") && has(t, "### 応答:"))
    return has(t, kLlmJp3Preamble) ? std::optional(ChatFormat::LlmJp3) : std::nullopt;
  // Llama 3.0; 3.1+ add a knowledge-date system block and tools.
  if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>") && has(t, "<|eot_id|>"))
    return has(t, "Cutting Knowledge") || has(t, "tools") ? std::nullopt : std::optional(ChatFormat::Llama3);
  if (has(t, "[INST]") && has(t, "[/INST]")) {
    if (has(t, "<<SYS>>")) return ChatFormat::Llama2;
    // Mistral v0.2 as first published; the later revisions (system_message, [AVAILABLE_TOOLS]) differ.
    if (has(t, "system_message") || has(t, "[AVAILABLE_TOOLS]") || has(t, "tools")) return std::nullopt;
    return ChatFormat::Mistral;
  }
  // Qwen2's ChatML with its default system prompt; plain ChatML (no default system), Qwen2.5 ("You are
  // Qwen, ...") and tool templates render differently.
  if (has(t, "<|im_start|>") && has(t, "<|im_end|>")) {
    if (!has(t, kQwen2DefaultSystem) || has(t, "You are Qwen") || has(t, "tools")) return std::nullopt;
    return ChatFormat::ChatML;
  }
  return std::nullopt;
}

std::string renderChat(ChatFormat f, const std::vector<ChatMessage>& messages, const ChatRenderOptions& o) {
  checkMessages(f, messages);
  switch (f) {
    case ChatFormat::Gemma: return renderGemma(messages, o);
    case ChatFormat::LlmJp3: return renderLlmJp3(messages, o);
    case ChatFormat::Llama2: return renderLlama2(messages, o);
    case ChatFormat::Llama3: return renderLlama3(messages, o);
    case ChatFormat::Mistral: return renderMistral(messages, o);
    case ChatFormat::ChatML: return renderChatML(messages, o);
  }
  KH_ASSERT(false, "unhandled ChatFormat");
  return {};
}

std::string endOfTurnText(ChatFormat f, const ChatRenderOptions& o) {
  switch (f) {
    case ChatFormat::Gemma: return "<end_of_turn>";
    case ChatFormat::Llama3: return "<|eot_id|>";
    case ChatFormat::ChatML: return "<|im_end|>";
    case ChatFormat::LlmJp3:
    case ChatFormat::Llama2:
    case ChatFormat::Mistral:
      if (o.eosToken.empty())
        throw Error(where(f), "an assistant turn ends with the eos token, and the tokenizer has none",
                    "set eos_token in tokenizer_config.json");
      return o.eosToken;
  }
  KH_ASSERT(false, "unhandled ChatFormat");
  return {};
}

ChatFormat resolveChatFormat(const Tokenizer& tok, const std::string& override, const std::string& where) {
  const std::string known = "known formats: " + chatFormatNames();
  if (!override.empty()) {
    if (auto f = parseChatFormat(override)) return *f;
    throw Error(where, "unknown chat template name '" + override + "'", known + " (--template NAME)");
  }
  const std::string& t = tok.chatTemplate();
  if (t.empty())
    throw Error(where, "the tokenizer has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja)",
                "pass --template NAME with the format the model was trained with; " + known);
  if (auto f = detectChatFormat(t)) return *f;
  size_t cut = 0;  // about 80 bytes, whole characters only
  for (uint32_t cp; cut < t.size();) {
    const size_t n = decodeUtf8(t, cut, cp);
    if (n == 0 || cut + n > 80) break;
    cut += n;
  }
  std::string head = t.substr(0, cut);
  for (char& c : head)
    if (c == '\n' || c == '\r') c = ' ';
  throw Error(where, "chat_template is not one Kumihimo can render (it begins '" + head + "')",
              "if the model was trained with one of the known formats, pass --template NAME; " + known);
}

}  // namespace kh
