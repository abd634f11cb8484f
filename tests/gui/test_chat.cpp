// QtTest for the Chat page (offscreen): streaming into the chat pane, Stop, Regenerate, export,
// and the side-by-side compare, each answer checked against core's own ChatSession run on a
// separately loaded copy of the same tiny model (same seed and settings).
#include <QElapsedTimer>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QSignalSpy>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QtTest>

#include <memory>

#include "core/error.h"
#include "core/jobs/chat_engine.h"
#include "core/model/chat_session.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "widgets/chat/chat_pane.h"
#include "widgets/chat/chat_worker.h"
#include "widgets/chat/compare_pane.h"
#include "widgets/chat_page.h"

namespace {

// The answer core gives for one user turn, without the facade or the GUI.
std::string referenceAnswer(const std::string& dir, const std::string& user, const kh::ChatSettings& s) {
  kh::ModelFolder folder = kh::ModelFolder::open(dir);
  auto tok = folder.requireTokenizer();
  auto model = kh::Model::load(folder);
  kh::ChatSession chat(folder, model, tok);
  chat.system = s.system;
  chat.sampling.temperature = s.temperature;
  chat.sampling.topP = s.topP;
  chat.sampling.topK = s.topK;
  chat.sampling.minP = s.minP;
  chat.sampling.repetitionPenalty = s.repetitionPenalty;
  chat.sampling.maxNewTokens = s.maxNewTokens;
  chat.sampling.seed = s.seed;
  return chat.reply(user).text;
}

kh::ChatSettings testSettings(uint64_t seed, int64_t maxNew = 48) {
  kh::ChatSettings s;
  s.system = "あなたは親切なアシスタントです。";
  s.temperature = 0.8;
  s.topP = 0.95;
  s.topK = 50;
  s.maxNewTokens = maxNew;
  s.seed = seed;
  return s;
}

}  // namespace

class ChatGuiTest : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void initTestCase();
  void streamsIntoPane();
  void stopCancels();
  void streamIsThrottled();
  void regenerateGivesSameAnswer();
  void exportsJsonAndMarkdown();
  void compareShowsTwoAnswers();
  void pageHasChatAndCompareTabs();
  void errorsBecomeMessages();
  void injectedRunnerCarriesTheAnswers();

 private:
  QTemporaryDir tmp_;
  std::string dirA_, dirB_;
  std::shared_ptr<kh::ChatEngine> a_, b_;
};

void ChatGuiTest::initTestCase() {
  QVERIFY(tmp_.isValid());
  dirA_ = (tmp_.path() + "/llama-a").toStdString();
  dirB_ = (tmp_.path() + "/llama-b").toStdString();
  kh::TinyOptions o;
  o.family = "llama";
  o.seed = 1;
  kh::makeTinyCheckpoint(dirA_, o);
  o.seed = 2;
  kh::makeTinyCheckpoint(dirB_, o);
  a_ = kh::ChatEngine::load(dirA_, "cpu");
  b_ = kh::ChatEngine::load(dirB_, "cpu");
  QVERIFY(!a_->describe().empty());
}

void ChatGuiTest::streamsIntoPane() {
  kh::gui::ChatPane pane;
  pane.setEngine(a_);
  pane.column()->setStreamIntervalMs(0);  // every token may cross alone: makes chunking visible
  const kh::ChatSettings s = testSettings(11, 64);
  pane.settingsBox()->setSettings(s);
  QSignalSpy chunks(pane.column(), &kh::gui::ChatColumn::chunkArrived);
  QSignalSpy done(pane.column(), &kh::gui::ChatColumn::replyFinished);
  pane.input()->setPlainText("こんにちは、元気ですか?");
  QTest::keyClick(pane.input(), Qt::Key_Return);  // Enter sends
  QVERIFY(pane.input()->toPlainText().isEmpty());
  QVERIFY(pane.column()->busy());
  QVERIFY(done.wait(15000));
  const auto& e = pane.column()->entries();
  QCOMPARE(int(e.size()), 2);
  QCOMPARE(e[0].role, QString("user"));
  QCOMPARE(e[1].role, QString("assistant"));
  QVERIFY2(chunks.count() > 1, qPrintable(QString("chunks: %1").arg(chunks.count())));
  QString streamed;
  for (const auto& c : chunks) streamed += c.at(0).toString();
  QCOMPARE(streamed, e[1].content);  // what streamed is the whole answer
  const std::string want = referenceAnswer(dirA_, "こんにちは、元気ですか?", s);
  QVERIFY(!want.empty());
  QCOMPARE(e[1].content.toStdString(), want);
  QVERIFY(e[1].hasStats);
  QVERIFY(e[1].stats.tokensPerSecond > 0);
  QVERIFY(e[1].stats.timeToFirstTokenMs > 0);
  QVERIFY(e[1].stats.newTokens > 1);
  QCOMPARE(done.at(0).at(0).toString(), QString::fromStdString(e[1].stats.stopReason));

  // Shift+Enter is a new line, not a send.
  pane.input()->setPlainText("a");
  pane.input()->moveCursor(QTextCursor::End);
  QTest::keyClick(pane.input(), Qt::Key_Return, Qt::ShiftModifier);
  QCOMPARE(pane.input()->toPlainText(), QString("a\n"));
  QCOMPARE(int(pane.column()->entries().size()), 2);
}

void ChatGuiTest::stopCancels() {
  kh::gui::ChatPane pane;
  pane.setEngine(a_);
  pane.column()->setStreamIntervalMs(0);
  pane.settingsBox()->setSettings(testSettings(5, 3000));
  QSignalSpy done(pane.column(), &kh::gui::ChatColumn::replyFinished);
  connect(pane.column(), &kh::gui::ChatColumn::chunkArrived, &pane, &kh::gui::ChatPane::stop);  // Stop at the first text
  pane.input()->setPlainText("長い話をしてください。");
  pane.send();
  QVERIFY(done.wait(15000));
  QCOMPARE(done.at(0).at(0).toString(), QString("cancelled"));
  const auto& answer = pane.column()->entries().back();
  QCOMPARE(answer.stats.stopReason, std::string("cancelled"));
  QVERIFY(answer.stats.newTokens < 3000);
  QVERIFY(!answer.content.isEmpty());  // kept as far as it got
  QVERIFY(!pane.column()->busy());
}

// At the default interval (50 ms) chunks are coalesced: never more than one per interval (plus the
// final one), however fast the model produces tokens.
void ChatGuiTest::streamIsThrottled() {
  kh::gui::ChatPane pane;
  pane.setEngine(a_);
  pane.settingsBox()->setSettings(testSettings(8, 600));
  QSignalSpy chunks(pane.column(), &kh::gui::ChatColumn::chunkArrived);
  QSignalSpy done(pane.column(), &kh::gui::ChatColumn::replyFinished);
  QElapsedTimer clock;
  clock.start();
  pane.input()->setPlainText("物語を書いてください。");
  pane.send();
  QVERIFY(done.wait(15000));
  const qint64 ms = clock.elapsed();
  const auto& answer = pane.column()->entries().back();
  qInfo("%d chunks in %lld ms for %lld tokens (stop: %s)", int(chunks.count()), ms, (long long)answer.stats.newTokens,
        answer.stats.stopReason.c_str());
  QVERIFY2(chunks.count() <= ms / 50 + 2,
           qPrintable(QString("%1 chunks in %2 ms for %3 tokens").arg(chunks.count()).arg(ms).arg(answer.stats.newTokens)));
  QVERIFY(chunks.count() < answer.stats.newTokens);  // coalesced, not one per token
}

void ChatGuiTest::regenerateGivesSameAnswer() {
  kh::gui::ChatPane pane;
  pane.setEngine(a_);
  pane.settingsBox()->setSettings(testSettings(42));
  QSignalSpy done(pane.column(), &kh::gui::ChatColumn::replyFinished);
  pane.input()->setPlainText("名前は何ですか?");
  pane.send();
  QVERIFY(done.wait(15000));
  const QString first = pane.column()->entries().back().content;
  QVERIFY(!first.isEmpty());
  pane.regenerate();
  QVERIFY(done.wait(15000));
  QCOMPARE(int(pane.column()->entries().size()), 2);  // replaced, not appended
  QCOMPARE(pane.column()->entries().back().content, first);
  // A different seed gives (for this model) another answer.
  auto s = testSettings(43);
  pane.settingsBox()->setSettings(s);
  pane.regenerate();
  QVERIFY(done.wait(15000));
  QVERIFY(pane.column()->entries().back().content != first);
}

void ChatGuiTest::exportsJsonAndMarkdown() {
  kh::gui::ChatPane pane;
  pane.setEngine(a_);
  pane.settingsBox()->setSettings(testSettings(3, 24));
  QSignalSpy done(pane.column(), &kh::gui::ChatColumn::replyFinished);
  pane.input()->setPlainText("天気はどう?");
  pane.send();
  QVERIFY(done.wait(15000));
  pane.input()->setPlainText("ありがとう");
  pane.send();
  QVERIFY(done.wait(15000));

  const QString path = tmp_.path() + "/chat.json";
  QString err;
  QVERIFY2(pane.saveAs(path, &err), qPrintable(err));
  QFile f(path);
  QVERIFY(f.open(QIODevice::ReadOnly));
  QJsonParseError perr;
  const QJsonDocument doc = QJsonDocument::fromJson(f.readAll(), &perr);
  QCOMPARE(perr.error, QJsonParseError::NoError);
  const QJsonArray msgs = doc.object()["messages"].toArray();
  QCOMPARE(msgs.size(), 4);
  const auto& e = pane.column()->entries();
  for (int i = 0; i < 4; ++i) {
    QCOMPARE(msgs[i].toObject()["role"].toString(), e[i].role);
    QCOMPARE(msgs[i].toObject()["content"].toString(), e[i].content);
  }
  QCOMPARE(msgs[0].toObject()["content"].toString(), QString("天気はどう?"));
  QVERIFY(msgs[1].toObject()["stats"].toObject().contains("tokens_per_second"));
  QCOMPARE(doc.object()["settings"].toObject()["seed"].toString(), QString("3"));
  QCOMPARE(doc.object()["model"].toString().toStdString(), a_->modelDir());

  const QString md = pane.exportMarkdown();
  QVERIFY(md.contains("### You"));
  QVERIFY(md.contains("ありがとう"));
  QVERIFY(md.contains(e[3].content));
}

void ChatGuiTest::compareShowsTwoAnswers() {
  kh::gui::ComparePane pane;
  pane.setEngines(a_, b_);
  const kh::ChatSettings s = testSettings(9);
  pane.settingsBox()->setSettings(s);
  QSignalSpy chunksA(pane.column(0), &kh::gui::ChatColumn::chunkArrived);
  QSignalSpy chunksB(pane.column(1), &kh::gui::ChatColumn::chunkArrived);
  QSignalSpy both(&pane, &kh::gui::ComparePane::bothFinished);
  pane.input()->setPlainText("日本の首都はどこですか?");
  QTest::keyClick(pane.input(), Qt::Key_Return);
  QVERIFY(both.wait(20000));
  const QString a = pane.column(0)->entries().back().content, b = pane.column(1)->entries().back().content;
  QVERIFY(!a.isEmpty());
  QVERIFY(!b.isEmpty());
  QVERIFY(chunksA.count() > 0 && chunksB.count() > 0);  // both columns streamed
  QCOMPARE(a.toStdString(), referenceAnswer(dirA_, "日本の首都はどこですか?", s));
  QCOMPARE(b.toStdString(), referenceAnswer(dirB_, "日本の首都はどこですか?", s));
  QVERIFY(a != b);  // two different models
  QVERIFY(pane.column(0)->entries().back().hasStats && pane.column(1)->entries().back().hasStats);
  const QJsonDocument doc = QJsonDocument::fromJson(pane.exportJson().toUtf8());
  QCOMPARE(doc.object()["columns"].toArray().size(), 2);
}

void ChatGuiTest::pageHasChatAndCompareTabs() {
  std::unique_ptr<QWidget> page(kh::makeChatPage(nullptr));
  QVERIFY(page);
  auto* tabs = page->findChild<QTabWidget*>();
  QVERIFY(tabs);
  QCOMPARE(tabs->count(), 2);
  QCOMPARE(tabs->tabText(0), QString("Chat"));
  QCOMPARE(tabs->tabText(1), QString("Compare"));

  // The picker loads on the worker and hands the engine to the chat pane.
  auto* picker = page->findChild<kh::gui::ModelPicker*>("model_picker");
  QVERIFY(picker);
  QSignalSpy loaded(picker, &kh::gui::ModelPicker::engineLoaded);
  QSignalSpy failed(picker, &kh::gui::ModelPicker::loadFailed);
  picker->setModelDir(QString::fromStdString(dirA_));
  picker->load();
  QVERIFY(loaded.wait(15000));
  auto* pane = page->findChild<kh::gui::ChatPane*>();
  QVERIFY(pane && pane->column()->engine());
  picker->setModelDir(tmp_.path() + "/no-such-model");
  picker->load();
  QVERIFY(failed.wait(15000));
  QVERIFY(failed.at(0).at(0).toString().contains("no-such-model"));
}

void ChatGuiTest::errorsBecomeMessages() {
  // The facade refuses a conversation that does not end with a user turn, naming the problem.
  QVERIFY_THROWS_EXCEPTION(kh::Error, a_->reply({{"user", "a"}, {"assistant", "b"}}, testSettings(1)));
  QVERIFY_THROWS_EXCEPTION(kh::Error, kh::ChatEngine::load((tmp_.path() + "/none").toStdString(), "cpu"));
  // In the pane, a kh::Error from the worker becomes the answer's error text, not a crash.
  kh::gui::ChatPane pane;
  pane.setEngine(a_);
  auto s = testSettings(1);
  s.templateOverride = "no-such-format";
  pane.settingsBox()->setSettings(s);
  QSignalSpy failed(pane.column(), &kh::gui::ChatColumn::replyFailed);
  pane.input()->setPlainText("こんにちは");
  pane.send();
  QVERIFY(failed.wait(15000));
  QVERIFY(failed.at(0).at(0).toString().contains("no-such-format"));
  QVERIFY(!pane.column()->entries().back().error.isEmpty());
  QVERIFY(!pane.column()->busy());
}

// The main window hands the page its device job runner: every model call must go through it, and
// the answer is the same as on the pane's own worker.
void ChatGuiTest::injectedRunnerCarriesTheAnswers() {
  kh::gui::ChatWorker device;  // stands in for the job runner's thread
  std::atomic<int> calls{0};
  kh::gui::RunOnWorker run = [&](std::function<void()> task) {
    ++calls;
    device.runner()(std::move(task));
  };
  kh::gui::ChatPane pane(nullptr, run);
  pane.setEngine(a_);
  const kh::ChatSettings s = testSettings(11, 64);
  pane.settingsBox()->setSettings(s);
  QSignalSpy done(pane.column(), &kh::gui::ChatColumn::replyFinished);
  pane.input()->setPlainText("こんにちは、元気ですか?");
  QTest::keyClick(pane.input(), Qt::Key_Return);
  QVERIFY(done.wait(15000));
  QVERIFY(calls.load() >= 1);
  QCOMPARE(pane.column()->entries().back().content.toStdString(), referenceAnswer(dirA_, "こんにちは、元気ですか?", s));
}

QTEST_MAIN(ChatGuiTest)
#include "test_chat.moc"
