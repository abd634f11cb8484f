// Fine-tuning data for the Llama 3 and ChatML (Qwen2) templates: the ids of one short conversation
// against a sequence written out by hand from the real Jinja templates (special tokens by id, the
// text between them through the tokenizer alone, never through renderChat), the labels of each
// answer's end-of-turn token, and what each template does with a system message.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "core/model/model_folder.h"
#include "core/model/tiny.h"
#include "core/text/tokenizer.h"
#include "core/train/data.h"
#include "core/train/trainer.h"
#include "tests/test_util.h"

using namespace kh;
using namespace kh::train;

namespace {

struct TinyChat {
  std::unique_ptr<test::TempDir> dir = std::make_unique<test::TempDir>();
  std::string path;
  ModelFolder folder;
  std::shared_ptr<Tokenizer> tok;
  TemplateContext tc{ChatFormat::Gemma, {}, {}};
  TinyChat(const std::string& family, const std::string& variant) {
    TinyOptions o;
    o.family = family;
    o.variant = variant;
    o.hidden = 32;
    o.intermediate = 64;
    o.layers = 1;
    o.seed = 3;
    path = dir->file("m");
    makeTinyCheckpoint(path, o);
    folder = ModelFolder::open(path);
    tok = folder.requireTokenizer();
    // As the trainer builds it: detected format, bos/eos text, generation_config's stop ids + end of turn.
    tc.format = resolveChatFormat(*tok, "", path);
    tc.render.bosToken = tok->bosToken();
    tc.render.eosToken = tok->eosToken();
    for (const auto& s : folder.stopTokens) tc.stopIds.push_back(s.id);
    const int eot = tok->pieceToId(endOfTurnText(tc.format, tc.render));
    if (eot >= 0 && std::find(tc.stopIds.begin(), tc.stopIds.end(), eot) == tc.stopIds.end()) tc.stopIds.push_back(eot);
  }
  // Appends special ids and plain-text pieces: the hand-written expected sequence.
  std::vector<int> seq(std::initializer_list<std::pair<int, const char*>> parts) const {
    std::vector<int> out;
    for (const auto& [id, text] : parts) {
      if (id >= 0) out.push_back(id);
      else for (int t : tok->encode(text, false)) out.push_back(t);
    }
    return out;
  }
  std::vector<int> chatPrompt(const std::vector<ChatMessage>& m) const {
    ChatRenderOptions r = tc.render;
    r.addGenerationPrompt = true;
    return tok->encode(renderChat(tc.format, m, r), false);
  }
};

constexpr int kText = -1;  // a seq() part that is text, not a special id

std::vector<int> slice(const std::vector<int>& v, int64_t from, int64_t to) {
  return std::vector<int>(v.begin() + from, v.begin() + to);
}

// Indices of trained tokens.
std::vector<int64_t> trainedAt(const TokenizedExample& x) {
  std::vector<int64_t> out;
  for (size_t k = 0; k < x.trained.size(); ++k)
    if (x.trained[k]) out.push_back(static_cast<int64_t>(k));
  return out;
}

std::vector<int64_t> range(int64_t from, int64_t to) {
  std::vector<int64_t> out;
  for (int64_t k = from; k < to; ++k) out.push_back(k);
  return out;
}

}  // namespace

TEST(TrainTemplates, Llama3ConversationMatchesHandWrittenIdsAndTrainsEotId) {
  TinyChat t("llama", "llama3");
  ASSERT_EQ(t.tc.format, ChatFormat::Llama3);
  const int bos = t.tok->pieceToId("<|begin_of_text|>"), sh = t.tok->pieceToId("<|start_header_id|>"),
            eh = t.tok->pieceToId("<|end_header_id|>"), eot = t.tok->pieceToId("<|eot_id|>"),
            eotext = t.tok->pieceToId("<|end_of_text|>");
  ASSERT_EQ(std::vector<int>({bos, eotext, sh, eh, eot}), std::vector<int>({1, 2, 3, 4, 5}));
  EXPECT_NE(std::find(t.tc.stopIds.begin(), t.tc.stopIds.end(), eot), t.tc.stopIds.end());
  EXPECT_NE(std::find(t.tc.stopIds.begin(), t.tc.stopIds.end(), eotext), t.tc.stopIds.end());

  // The template: bos, then per message "<|start_header_id|>ROLE<|end_header_id|>\n\n" + trim(content)
  // + "<|eot_id|>"; the generation prompt opens an assistant header. The system message is kept as
  // its own header block and is not trained; the content's surrounding spaces are trimmed.
  Conversation c = parseConversation(
      R"({"messages": [{"role": "system", "content": "短く答えて"}, {"role": "user", "content": " 空は何色ですか\n"}, {"role": "assistant", "content": "青です"}]})",
      "l3.jsonl:1");
  TokenizedExample x = tokenizeConversation(c, t.tc, *t.tok, {});
  const std::vector<int> prompt = t.seq({{bos, ""}, {sh, ""}, {kText, "system"}, {eh, ""}, {kText, "\n\n短く答えて"},
                                         {eot, ""}, {sh, ""}, {kText, "user"}, {eh, ""}, {kText, "\n\n空は何色ですか"},
                                         {eot, ""}, {sh, ""}, {kText, "assistant"}, {eh, ""}, {kText, "\n\n"}});
  // This tiny vocabulary has no piece spanning "\n" and a Japanese character, so the answer's
  // tokens follow the prompt's unchanged.
  const std::vector<int> answer = t.seq({{kText, "青です"}, {eot, ""}});
  std::vector<int> want = prompt;
  want.insert(want.end(), answer.begin(), answer.end());
  EXPECT_EQ(x.ids, want);
  ASSERT_EQ(x.answerStart.size(), 1u);
  EXPECT_EQ(x.answerStart[0], static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(x.lastPrompt, prompt);
  EXPECT_EQ(x.lastPrompt, t.chatPrompt({c.messages[0], c.messages[1]})) << "training prompt must be the chat path's prompt";
  // Trained: exactly the answer and its <|eot_id|> (the last token); nothing of the system or user turn.
  EXPECT_EQ(trainedAt(x), range(static_cast<int64_t>(prompt.size()), static_cast<int64_t>(want.size())));
  EXPECT_EQ(x.ids[static_cast<size_t>(x.lastTrained[0])], eot);
  EXPECT_EQ(x.lastAnswer, answer);

  // Two turns: both answers end on a trained <|eot_id|>; the second prompt equals chat's for it.
  Conversation two = parseConversation(
      R"({"messages": [{"role": "user", "content": "一"}, {"role": "assistant", "content": "二"}, {"role": "user", "content": "三"}, {"role": "assistant", "content": "四"}]})",
      "l3.jsonl:2");
  TokenizedExample x2 = tokenizeConversation(two, t.tc, *t.tok, {});
  ASSERT_EQ(x2.answerStart.size(), 2u);
  const std::vector<int> want2 =
      t.seq({{bos, ""}, {sh, ""}, {kText, "user"}, {eh, ""}, {kText, "\n\n一"}, {eot, ""}, {sh, ""}, {kText, "assistant"}, {eh, ""},
             {kText, "\n\n二"}, {eot, ""}, {sh, ""}, {kText, "user"}, {eh, ""}, {kText, "\n\n三"}, {eot, ""}, {sh, ""},
             {kText, "assistant"}, {eh, ""}, {kText, "\n\n四"}, {eot, ""}});
  EXPECT_EQ(x2.ids, want2);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(x2.ids[static_cast<size_t>(x2.lastTrained[k])], eot) << "turn " << k;
    EXPECT_TRUE(x2.trained[static_cast<size_t>(x2.lastTrained[k])]);
    EXPECT_FALSE(x2.trained[static_cast<size_t>(x2.answerStart[k]) - 1]) << "the header before an answer is not trained";
  }
  EXPECT_EQ(x2.lastPrompt, t.chatPrompt({two.messages[0], two.messages[1], two.messages[2]}));
  LabelAudit audit = auditLabels({x, x2}, {c, two}, t.tc, *t.tok);
  EXPECT_TRUE(audit.ok()) << audit.report;
  EXPECT_NE(audit.report.find("identical"), std::string::npos) << audit.report;
  EXPECT_EQ(audit.report.find("note:"), std::string::npos) << "Llama 3 keeps a system message: nothing to warn about";
  // With the end of turn masked (the classic bug) the audit refuses the data.
  LabelOptions masked;
  masked.maskEndOfTurn = true;
  EXPECT_FALSE(auditLabels({tokenizeConversation(c, t.tc, *t.tok, masked)}, {c}, t.tc, *t.tok).ok());
}

TEST(TrainTemplates, ChatMLConversationMatchesHandWrittenIdsAndTrainsImEnd) {
  TinyChat t("qwen2", "");
  ASSERT_EQ(t.tc.format, ChatFormat::ChatML);
  const int start = t.tok->pieceToId("<|im_start|>"), end = t.tok->pieceToId("<|im_end|>"), eot = t.tok->pieceToId("<|endoftext|>");
  ASSERT_EQ(std::vector<int>({eot, start, end}), std::vector<int>({1, 2, 3}));
  // Qwen2's template: no bos; "<|im_start|>ROLE\n" + content + "<|im_end|>\n" per message, content
  // not trimmed; without a system message it writes its default one first.
  Conversation c = parseConversation(R"({"prompt": "空は何色ですか", "completion": "青です"})", "q.jsonl:1");
  TokenizedExample x = tokenizeConversation(c, t.tc, *t.tok, {});
  const std::vector<int> prompt =
      t.seq({{start, ""}, {kText, "system\nYou are a helpful assistant."}, {end, ""}, {kText, "\n"}, {start, ""},
             {kText, "user\n空は何色ですか"}, {end, ""}, {kText, "\n"}, {start, ""}, {kText, "assistant\n"}});
  const std::vector<int> answer = t.seq({{kText, "青です"}, {end, ""}});
  std::vector<int> want = prompt;
  want.insert(want.end(), answer.begin(), answer.end());
  std::vector<int> wantWithNewline = want;
  for (int id : t.tok->encode("\n", false)) wantWithNewline.push_back(id);
  EXPECT_EQ(x.ids, wantWithNewline) << "the template's \"\\n\" after <|im_end|> is part of the sequence";
  EXPECT_EQ(x.lastPrompt, prompt);
  EXPECT_EQ(x.lastPrompt, t.chatPrompt({c.messages[0]}));
  // Trained: the answer through <|im_end|>; the "\n" after it is not (generation stops before it).
  EXPECT_EQ(trainedAt(x), range(static_cast<int64_t>(prompt.size()), static_cast<int64_t>(want.size())));
  EXPECT_EQ(x.ids[static_cast<size_t>(x.lastTrained[0])], end);

  // A system message replaces the default one; its text is in the prompt and never trained.
  Conversation s = parseConversation(
      R"({"messages": [{"role": "system", "content": "短く答えて"}, {"role": "user", "content": "一"}, {"role": "assistant", "content": "二"}, {"role": "user", "content": "三"}, {"role": "assistant", "content": "四"}]})",
      "q.jsonl:2");
  TokenizedExample xs = tokenizeConversation(s, t.tc, *t.tok, {});
  const std::vector<int> wantS =
      t.seq({{start, ""}, {kText, "system\n短く答えて"}, {end, ""}, {kText, "\n"}, {start, ""}, {kText, "user\n一"}, {end, ""},
             {kText, "\n"}, {start, ""}, {kText, "assistant\n二"}, {end, ""}, {kText, "\n"}, {start, ""}, {kText, "user\n三"},
             {end, ""}, {kText, "\n"}, {start, ""}, {kText, "assistant\n四"}, {end, ""}, {kText, "\n"}});
  EXPECT_EQ(xs.ids, wantS);
  const std::vector<int> defaultSystem = t.tok->encode("You are a helpful assistant.", false);
  EXPECT_EQ(std::search(xs.ids.begin(), xs.ids.end(), defaultSystem.begin(), defaultSystem.end()), xs.ids.end())
      << "a given system message replaces the default one";
  ASSERT_EQ(xs.answerStart.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(xs.ids[static_cast<size_t>(xs.lastTrained[k])], end) << "turn " << k;
    for (int64_t i = 0; i < xs.answerStart[0]; ++i) EXPECT_FALSE(xs.trained[static_cast<size_t>(i)]) << "system/user token " << i;
  }
  // Every token between the two answers (the first answer's "\n", the second user turn, the header) is untrained.
  for (int64_t i = xs.lastTrained[0] + 1; i < xs.answerStart[1]; ++i) EXPECT_FALSE(xs.trained[static_cast<size_t>(i)]) << i;
  EXPECT_EQ(xs.lastPrompt, t.chatPrompt({s.messages[0], s.messages[1], s.messages[2], s.messages[3]}));
  LabelAudit audit = auditLabels({x, xs}, {c, s}, t.tc, *t.tok);
  EXPECT_TRUE(audit.ok()) << audit.report;
  // Batched with pad (<|endoftext|>) after a short example: the trained <|im_end|> stays trained.
  Batch b = collate({&x, &xs}, eot);
  const int64_t lastX = x.lastTrained[0];
  EXPECT_TRUE(b.trained[0][lastX].item<bool>());
  for (int64_t k = static_cast<int64_t>(x.ids.size()); k < b.ids.size(1); ++k) EXPECT_FALSE(b.trained[0][k].item<bool>());
}
