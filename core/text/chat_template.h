// Chat templates of the model families the seed uses, rendered by one C++ renderer per known format
// (chosen by recognising the model's Jinja chat_template), byte for byte as the real template renders.
// Must never guess: an unrecognised template or a conversation the real template refuses is a kh::Error.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kh {

class Tokenizer;

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant" (anything else is refused)
  std::string content;  // UTF-8
};

enum class ChatFormat { Gemma, LlmJp3, Llama2, Llama3, Mistral, ChatML };

// "gemma", "llm-jp-3", "llama2", "llama3", "mistral", "chatml".
const char* chatFormatName(ChatFormat f);
// The names above, case-insensitive; nullopt for anything else.
std::optional<ChatFormat> parseChatFormat(std::string_view name);
// Every format, in declaration order, and their names joined ("gemma, llm-jp-3, ...") for hints.
const std::vector<ChatFormat>& allChatFormats();
std::string chatFormatNames();

struct ChatRenderOptions {
  bool addGenerationPrompt = true;  // end with the opening of an assistant turn (where the template has one)
  std::string bosToken, eosToken;   // the tokenizer's bos/eos text, as transformers passes them
};

// Which format a raw Jinja template is, by its distinctive markers; nullopt when unknown, and also for
// known later variants that render differently (Gemma 3, Llama 3.1+, Mistral's system-message and tool
// templates, ChatML without Qwen2's default system prompt or with tools, Qwen2.5's).
std::optional<ChatFormat> detectChatFormat(const std::string& jinjaTemplate);

// Renders exactly what the real template renders for the conversation (tests/golden/chat_templates).
// Per format, as the real templates do:
//   gemma    "<start_of_turn>user|model\n" + trim(content) + "<end_of_turn>\n"; no system role, so a
//            leading system message is folded into the first user turn (system + "\n\n" + user, the
//            whole then trimmed by the template), as Gemma's docs advise; roles must alternate.
//   llm-jp-3 any system message writes the fixed preamble 「以下は、タスクを説明する指示です。…」 (its
//            content is ignored, as the real template does); no role checks; no trimming.
//   llama2   a leading system goes into the first [INST] as <<SYS>>; content strip()ped; roles
//            alternate; no generation prompt (a user turn already ends with [/INST]).
//   llama3   header per message, content trimmed, no role checks.
//   mistral  (v0.2 as first published) user/assistant only, alternating; no trimming; no generation prompt.
//   chatml   (Qwen2) default system "You are a helpful assistant." unless the first message is system.
// "Trim" is Python's str.strip(): every Unicode White_Space character plus U+001C..U+001F (so U+3000
// and U+00A0 go, U+200B and U+FEFF stay). kh::Error("chat template <name>", cause) for an empty
// conversation, an unknown role, content that is not UTF-8, and whatever the real template raises on.
std::string renderChat(ChatFormat f, const std::vector<ChatMessage>& messages, const ChatRenderOptions& o);

// The text generation must stop on at the end of an assistant turn: "<end_of_turn>" (Gemma; its eos
// <eos> differs), "<|eot_id|>", "<|im_end|>", the eos token for llm-jp-3, Mistral and Llama-2.
// kh::Error when the format needs the eos and o.eosToken is empty.
std::string endOfTurnText(ChatFormat f, const ChatRenderOptions& o);

// The format for a model folder: `override` (a name above) when non-empty, else detected from the
// tokenizer's chat_template. kh::Error naming `where` with a hint listing the known formats and
// `--template NAME` when the override is unknown or the template is missing or unrecognised.
ChatFormat resolveChatFormat(const Tokenizer& tok, const std::string& override, const std::string& where);

}  // namespace kh
