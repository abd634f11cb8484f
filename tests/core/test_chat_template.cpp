// Chat templates: every renderer matches, byte for byte, what python3-jinja2 renders from our
// transcriptions of the real templates (tests/golden/chat_templates, by tests/tools/render_chat_golden.py),
// raises where they raise, and formats are detected from the templates real and tiny models ship.
// Must never need Python at run time: the golden file is committed.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/model/tiny.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"
#include "tests/test_util.h"

using kh::ChatFormat;
using kh::test::TempDir;

namespace {

std::string goldenDir() { return kh::test::sourceDir() + "/tests/golden/chat_templates/"; }

std::vector<kh::ChatMessage> messagesOf(const nlohmann::json& j) {
  std::vector<kh::ChatMessage> r;
  for (const auto& m : j) r.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return r;
}

// Visible escapes for a failure message (newlines and control bytes), UTF-8 kept.
std::string shown(const std::string& s) {
  std::string r;
  for (unsigned char c : s) {
    if (c == '\n') r += "\\n";
    else if (c == '\r') r += "\\r";
    else if (c == '\t') r += "\\t";
    else if (c < 0x20) r += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
    else r += static_cast<char>(c);
  }
  return r;
}

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const kh::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ChatTemplate, MatchesJinjaGoldenByteForByte) {
  const auto golden = nlohmann::json::parse(kh::test::readFile(goldenDir() + "expected.json"));
  int rendered = 0, raised = 0;
  for (ChatFormat f : kh::allChatFormats()) {
    const std::string name = kh::chatFormatName(f);
    ASSERT_TRUE(golden.contains(name)) << name;
    ASSERT_GE(golden[name].size(), 16u) << name;
    for (const auto& c : golden[name]) {
      const std::string label = name + "/" + c.at("name").get<std::string>() +
                                (c.at("add_generation_prompt").get<bool>() ? "+gen" : "");
      kh::ChatRenderOptions o;
      o.addGenerationPrompt = c.at("add_generation_prompt").get<bool>();
      o.bosToken = c.at("bos").get<std::string>();
      o.eosToken = c.at("eos").get<std::string>();
      const auto messages = messagesOf(c.at("messages"));
      if (c.value("error", false)) {
        try {
          const std::string got = kh::renderChat(f, messages, o);
          ADD_FAILURE() << label << ": the real template raises ('" << c.value("error_message", "")
                        << "') but we rendered: " << shown(got);
        } catch (const kh::Error& e) {
          EXPECT_EQ(e.where(), "chat template " + name) << label;
          ++raised;
        }
        continue;
      }
      std::string got;
      try {
        got = kh::renderChat(f, messages, o);
      } catch (const kh::Error& e) {
        ADD_FAILURE() << label << ": threw " << e.what();
        continue;
      }
      const std::string want = c.at("rendered").get<std::string>();
      EXPECT_EQ(got, want) << label << "\n got: " << shown(got) << "\nwant: " << shown(want);
      ++rendered;
    }
  }
  EXPECT_GT(rendered, 100);
  EXPECT_GT(raised, 20);
}

TEST(ChatTemplate, GoldenTemplatesDetectAsTheirFormat) {
  for (ChatFormat f : kh::allChatFormats()) {
    const std::string name = kh::chatFormatName(f);
    const std::string text = kh::test::readFile(goldenDir() + name + ".jinja");
    EXPECT_EQ(kh::detectChatFormat(text), f) << name;
    EXPECT_EQ(kh::parseChatFormat(name), f) << name;
  }
  EXPECT_EQ(kh::parseChatFormat("ChatML"), ChatFormat::ChatML);
  EXPECT_EQ(kh::parseChatFormat("LLM-JP-3"), ChatFormat::LlmJp3);
  EXPECT_EQ(kh::parseChatFormat("vicuna"), std::nullopt);
  EXPECT_EQ(kh::parseChatFormat(""), std::nullopt);
}

TEST(ChatTemplate, LaterVariantsThatRenderDifferentlyAreNotDetected) {
  // Excerpts of templates whose output differs from our renderers; each must not be guessed.
  EXPECT_EQ(kh::detectChatFormat("{{ bos_token }}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
                                 "<start_of_turn>{{ role }}<end_of_turn>"),
            std::nullopt);  // Gemma 3
  EXPECT_EQ(kh::detectChatFormat("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023"
                                 "<|eot_id|>"),
            std::nullopt);  // Llama 3.1
  EXPECT_EQ(kh::detectChatFormat("{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
                                 "{{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}"),
            std::nullopt);  // Mistral's later revision with a system message
  EXPECT_EQ(kh::detectChatFormat("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                                 "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"),
            std::nullopt);  // plain ChatML: no default system prompt
  EXPECT_EQ(kh::detectChatFormat("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                                 "assistant.<|im_end|>"),
            std::nullopt);  // Qwen2.5
  EXPECT_EQ(kh::detectChatFormat("{{ '### 指示:\n' }}{{ '### 応答:\n' }}"), std::nullopt);  // other Japanese Alpaca
  EXPECT_EQ(kh::detectChatFormat("{% for m in messages %}USER: {{ m['content'] }}{% endfor %}"), std::nullopt);
  EXPECT_EQ(kh::detectChatFormat(""), std::nullopt);
}

TEST(ChatTemplate, TinyModelsResolveToTheirFormats) {
  const std::map<std::string, ChatFormat> expected = {
      {"llama", ChatFormat::LlmJp3}, {"gemma2", ChatFormat::Gemma}, {"mistral", ChatFormat::Mistral},
      {"qwen2", ChatFormat::ChatML}};
  TempDir d;
  for (const auto& [family, format] : expected) {
    kh::TinyOptions o;
    o.family = family;
    o.layers = 1;
    kh::makeTinyCheckpoint(d.file(family), o);
    auto tok = kh::Tokenizer::fromFolder(d.file(family));
    EXPECT_EQ(kh::resolveChatFormat(*tok, "", d.file(family)), format) << family;
    // The tiny models ship the very templates the golden renderings come from.
    EXPECT_EQ(tok->chatTemplate() + "\n", kh::test::readFile(goldenDir() + kh::chatFormatName(format) + ".jinja"))
        << family;
    // An explicit override wins over what the template says.
    EXPECT_EQ(kh::resolveChatFormat(*tok, "llama3", d.file(family)), ChatFormat::Llama3) << family;
  }
  // The tiny Gemma tokenizer knows the end of turn as one piece, 107, not its eos.
  auto gemma = kh::Tokenizer::fromFolder(d.file("gemma2"));
  kh::ChatRenderOptions go{true, gemma->bosToken(), gemma->eosToken()};
  EXPECT_EQ(gemma->pieceToId(kh::endOfTurnText(ChatFormat::Gemma, go)), 107);
  EXPECT_NE(kh::endOfTurnText(ChatFormat::Gemma, go), gemma->eosToken());
  const auto ids = gemma->encode(kh::renderChat(ChatFormat::Gemma, {{"user", "こんにちは"}}, go), false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 2);  // <bos>, written by the template
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 106), 2);  // <start_of_turn> user, model
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 107), 1);  // <end_of_turn>

  kh::TinyOptions o;
  o.family = "gpt2";
  o.layers = 1;
  kh::makeTinyCheckpoint(d.file("gpt2"), o);
  auto gpt2 = kh::Tokenizer::fromFolder(d.file("gpt2"));
  try {
    kh::resolveChatFormat(*gpt2, "", d.file("gpt2"));
    ADD_FAILURE() << "gpt2 has no chat template";
  } catch (const kh::Error& e) {
    EXPECT_EQ(e.where(), d.file("gpt2"));
    EXPECT_NE(e.hint().find("--template NAME"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("llm-jp-3"), std::string::npos) << e.what();
  }
  EXPECT_EQ(kh::resolveChatFormat(*gpt2, "llm-jp-3", d.file("gpt2")), ChatFormat::LlmJp3);
}

TEST(ChatTemplate, UnknownTemplateOrNameFailsWithHint) {
  TempDir d;
  kh::TinyOptions o;
  o.family = "qwen2";
  o.layers = 1;
  kh::makeTinyCheckpoint(d.file("m"), o);
  // A folder's chat_template.jinja takes precedence over tokenizer_config.json's (transformers' rule).
  kh::test::writeFile(d.file("m/chat_template.jinja"),
                      "{% for m in messages %}<|user|>{{ m['content'] }}</s>{% endfor %}");
  auto tok = kh::Tokenizer::fromFolder(d.file("m"));
  try {
    kh::resolveChatFormat(*tok, "", d.file("m"));
    ADD_FAILURE() << "an unknown template must not be guessed";
  } catch (const kh::Error& e) {
    EXPECT_EQ(e.where(), d.file("m"));
    EXPECT_NE(e.cause().find("<|user|>"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("--template NAME"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("gemma, llm-jp-3, llama2, llama3, mistral, chatml"), std::string::npos) << e.what();
  }
  EXPECT_EQ(kh::resolveChatFormat(*tok, "ChatML", d.file("m")), ChatFormat::ChatML);
  const std::string bad = errorOf([&] { kh::resolveChatFormat(*tok, "vicuna", d.file("m")); });
  EXPECT_NE(bad.find("'vicuna'"), std::string::npos) << bad;
  EXPECT_NE(bad.find("--template NAME"), std::string::npos) << bad;
}

TEST(ChatTemplate, RefusesWhatTheRealTemplatesRefuse) {
  const kh::ChatRenderOptions o{true, "<s>", "</s>"};
  // Roles that do not alternate, as the Gemma, Llama-2 and Mistral templates raise.
  for (ChatFormat f : {ChatFormat::Gemma, ChatFormat::Llama2, ChatFormat::Mistral}) {
    const std::string e = errorOf([&] { kh::renderChat(f, {{"user", "a"}, {"user", "b"}}, o); });
    EXPECT_NE(e.find("roles must alternate"), std::string::npos) << kh::chatFormatName(f) << ": " << e;
    EXPECT_NE(e.find("message 1"), std::string::npos) << e;
  }
  // Gemma: a system message folds into the user turn right after it, and nowhere else.
  const std::string g = errorOf([&] { kh::renderChat(ChatFormat::Gemma, {{"system", "s"}}, o); });
  EXPECT_NE(g.find("System role not supported"), std::string::npos) << g;
  EXPECT_EQ(kh::renderChat(ChatFormat::Gemma, {{"system", " Be brief. "}, {"user", "Hi "}}, {false, "<bos>", ""}),
            "<bos><start_of_turn>user\nBe brief. \n\nHi<end_of_turn>\n");
  // Mistral v0.2 has no system role.
  EXPECT_NE(errorOf([&] { kh::renderChat(ChatFormat::Mistral, {{"user", "a"}, {"system", "b"}}, o); })
                .find("Only user and assistant roles are supported!"),
            std::string::npos);
  // Our own refusals, in every format: no messages, a role we do not know, bytes that are not UTF-8.
  for (ChatFormat f : kh::allChatFormats()) {
    EXPECT_NE(errorOf([&] { kh::renderChat(f, {}, o); }).find("no messages"), std::string::npos);
    EXPECT_NE(errorOf([&] { kh::renderChat(f, {{"user", "a"}, {"tool", "b"}}, o); }).find("role 'tool'"),
              std::string::npos);
    EXPECT_NE(errorOf([&] { kh::renderChat(f, {{"user", "a\xE3\x81"}}, o); }).find("not valid UTF-8 at byte 1"),
              std::string::npos);
  }
}

TEST(ChatTemplate, EndOfTurnText) {
  const kh::ChatRenderOptions o{true, "<s>", "</s>"};
  EXPECT_EQ(kh::endOfTurnText(ChatFormat::Gemma, o), "<end_of_turn>");
  EXPECT_EQ(kh::endOfTurnText(ChatFormat::Llama3, o), "<|eot_id|>");
  EXPECT_EQ(kh::endOfTurnText(ChatFormat::ChatML, o), "<|im_end|>");
  for (ChatFormat f : {ChatFormat::LlmJp3, ChatFormat::Llama2, ChatFormat::Mistral}) {
    EXPECT_EQ(kh::endOfTurnText(f, o), "</s>");
    EXPECT_THROW(kh::endOfTurnText(f, kh::ChatRenderOptions{}), kh::Error);
  }
}
