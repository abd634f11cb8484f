// QtTest for retrieval-augmented chat on the chat page (offscreen): attach a store of the bundled
// persona documents, ask the researcher's question, and check the inspector against core's own
// search run separately on the same store (every score and rank), the threshold preview against a
// brute-force recount from the scores the table shows, "open source" against the JSONL file, and
// that each turn keeps its own hits. With KH_SCREENSHOT_DIR set, also saves chat-rag.png there.
#include <QDir>
#include <QDoubleSpinBox>
#include <QComboBox>
#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QSignalSpy>
#include <QSlider>
#include <QSplitter>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTextBrowser>
#include <QtTest>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "core/error.h"
#include "core/jobs/chat_engine.h"
#include "core/model/chat_session.h"
#include "core/model/model_folder.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "core/retrieval/encoder_embedder.h"
#include "core/retrieval/rerank.h"
#include "core/retrieval/store.h"
#include "widgets/chat/chat_pane.h"
#include "tests/core/mecab_dictionary.h"
#include "widgets/chat/rag_inspector.h"

namespace {

using Inspector = kh::gui::RetrievalInspector;
const QString kNameQuery = QStringLiteral("あなたの名前はなんですか?");
const QString kHobbyQuery = QStringLiteral("趣味は何ですか?");
// The store's embedder: the bundled one this project trained (resources/models/tiny-ja-embedder),
// searched at the default fusion weights, as a user who attaches it sees it.
std::string embedderDir() { return std::string(KH_SOURCE_DIR) + "/resources/models/tiny-ja-embedder"; }

// A Markdown note long enough for several chunks (200 characters each), none about names.
const char* kNotes =
    "旅行の記録です。朝早くに駅を出発しました。車窓からは田んぼと山が見えました。"
    "昼前に小さな港町に着きました。市場では新鮮な魚が並んでいました。"
    "昼ご飯は海鮮丼にしました。午後は灯台まで歩きました。灯台の上からは島がいくつも見えました。"
    "夕方には雨が降り始めました。駅前の喫茶店で雨宿りをしました。店主は古いレコードをかけていました。"
    "帰りの列車は混んでいました。家に着いたのは夜の十時過ぎでした。次は秋に行きたいと思います。"
    "紅葉の季節には山の色が変わるそうです。写真をたくさん撮るつもりです。";

std::string docsFile() { return std::string(KH_SOURCE_DIR) + "/resources/retrieval/ja_persona_docs.jsonl"; }

// The document's text straight from the JSONL file (not through the store).
QString docTextFromFile(const QString& id) {
  QFile f(QString::fromStdString(docsFile()));
  if (!f.open(QIODevice::ReadOnly)) return {};
  for (const QByteArray& line : f.readAll().split('\n')) {
    const QJsonObject o = QJsonDocument::fromJson(line).object();
    if (o["id"].toString() == id) return o["text"].toString();
  }
  return {};
}

kh::ChatSettings testSettings() {
  kh::ChatSettings s;
  s.temperature = 0;  // greedy: the reference answer below must match
  s.maxNewTokens = 16;
  return s;
}

double cellValue(QTableWidget* t, int row, int col) { return t->item(row, col)->data(Qt::UserRole).toDouble(); }

// Kept count by brute force from what the table shows: the rerank column when the turn was
// reranked (rows without a rerank score were not rescored: dropped), else the fused column.
int recount(QTableWidget* t, const kh::RagThreshold& th) {
  std::vector<double> s;
  bool reranked = false;
  for (int r = 0; r < t->rowCount(); ++r) reranked |= t->item(r, Inspector::Rerank)->data(Qt::UserRole).isValid();
  for (int r = 0; r < t->rowCount(); ++r) {
    const QVariant rerank = t->item(r, Inspector::Rerank)->data(Qt::UserRole);
    if (reranked && !rerank.isValid()) continue;
    s.push_back(rerank.isValid() ? rerank.toDouble() : cellValue(t, r, Inspector::Fused));
  }
  if (s.empty()) return 0;
  if (th.mode == "none") return static_cast<int>(s.size());
  int n = 0;
  if (th.mode == "relative") {
    // A negative best (reranker log-odds) keeps down to best / ratio.
    const double best = *std::max_element(s.begin(), s.end());
    for (double v : s) n += best >= 0 ? v >= th.ratio * best : v >= best / th.ratio;
    return n;
  }
  double mean = 0, var = 0;
  for (double v : s) mean += v;
  mean /= static_cast<double>(s.size());
  for (double v : s) var += (v - mean) * (v - mean);
  const double sd = std::sqrt(var / static_cast<double>(s.size()));
  for (double v : s) n += (sd > 0 ? (v - mean) / sd : 0.0) >= th.zMin;
  return n;
}

}  // namespace

class RagInspectorTest : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void initTestCase();
  void documentsBoxShowsTheStoreOrWhyNot();
  void nameQueryShowsThePersonaFirstWithEveryScore();
  void thresholdPreviewMatchesRecount();
  void openSourceShowsTheDocument();
  void screenshot();
  void eachTurnKeepsItsOwnHits();
  void rerankerColumnShowsItsScores();
  void mecabDictionaryFieldOpensARuriStore();
  void corruptIndexOffersARebuild();
  void importBuildsAStoreFromTheBox();
  void cleanupTestCase();

 private:
  std::vector<kh::retrieval::RetrievalHit> coreSearch(const QString& query, const kh::RagThreshold& th = {}) const;
  QTemporaryDir tmp_;
  std::string model_, store_;
  std::shared_ptr<kh::ChatEngine> engine_;
  std::unique_ptr<kh::gui::ChatPane> pane_;
};

void RagInspectorTest::initTestCase() {
  QVERIFY(tmp_.isValid());
  model_ = (tmp_.path() + "/tiny").toStdString();
  store_ = (tmp_.path() + "/store").toStdString();
  kh::TinyOptions o;
  o.family = "llama";
  o.seed = 3;
  kh::makeTinyCheckpoint(model_, o);
  {
    kh::retrieval::EncoderEmbedder emb(embedderDir());
    auto s = kh::retrieval::DocumentStore::open(store_);
    s.setEmbedderModel(embedderDir());
    QFile notes(tmp_.path() + "/notes.md");
    QVERIFY(notes.open(QIODevice::WriteOnly));
    notes.write(kNotes);
    notes.close();
    QCOMPARE(s.importFiles({docsFile(), notes.fileName().toStdString()}, &emb).added, 16);
    int noteChunks = 0;
    for (const auto& c : s.chunks()) noteChunks += c.docId == "notes.md";
    QVERIFY2(noteChunks >= 2, "the note must have several chunks");
  }
  engine_ = kh::ChatEngine::load(model_, "cpu");

  // One pane for the conversation tests below: store attached, the researcher's question asked.
  pane_ = std::make_unique<kh::gui::ChatPane>();
  pane_->setEngine(engine_);
  pane_->settingsBox()->setSettings(testSettings());
  auto* docs = pane_->documentsBox();
  QSignalSpy attached(docs, &kh::gui::DocumentsBox::attached);
  docs->setStoreDir(QString::fromStdString(store_));
  docs->attach();
  QVERIFY(attached.wait(15000));
  QSignalSpy done(pane_->column(), &kh::gui::ChatColumn::replyFinished);
  pane_->input()->setPlainText(kNameQuery);
  pane_->send();
  QVERIFY(done.wait(15000));
}

std::vector<kh::retrieval::RetrievalHit> RagInspectorTest::coreSearch(const QString& query, const kh::RagThreshold& th) const {
  auto s = kh::retrieval::DocumentStore::open(store_);
  kh::retrieval::EncoderEmbedder emb(embedderDir());
  kh::retrieval::SearchOptions o;
  o.k = 1000;
  o.threshold = th.mode;
  o.relativeRatio = th.ratio;
  o.zMin = th.zMin;
  return s.search(query.toStdString(), o, &emb);
}

void RagInspectorTest::documentsBoxShowsTheStoreOrWhyNot() {
  const QString status = pane_->documentsBox()->status();
  QVERIFY2(status.contains("16 documents") && status.contains("dense by encoder-mean:tiny-ja-embedder"), qPrintable(status));
  kh::gui::ChatPane other;
  QSignalSpy failed(other.documentsBox(), &kh::gui::DocumentsBox::attachFailed);
  other.documentsBox()->setStoreDir(tmp_.path() + "/no-store-here");
  other.documentsBox()->attach();
  QVERIFY(failed.wait(15000));
  QVERIFY2(failed.at(0).at(0).toString().contains("no-store-here"), qPrintable(failed.at(0).at(0).toString()));
  QVERIFY(!other.column()->ragStore());
}

void RagInspectorTest::nameQueryShowsThePersonaFirstWithEveryScore() {
  const auto& e = pane_->column()->entries();
  QCOMPARE(int(e.size()), 2);
  QVERIFY(e[0].retrieval);
  QVERIFY(!e[1].retrieval);
  Inspector* in = pane_->inspector();
  QVERIFY(!in->isHidden());  // shown when the store was attached
  QCOMPARE(in->selectedTurn(), 0);
  QTableWidget* t = in->table();
  QCOMPARE(t->item(0, Inspector::Doc)->text(), QString("persona-name"));
  QCOMPARE(t->item(0, Inspector::Kept)->text(), QString("kept"));

  // Every row against core's search on the same store, run here without the facade.
  const auto want = coreSearch(kNameQuery);
  QCOMPARE(t->rowCount(), int(want.size()));
  QVERIFY(t->rowCount() > 3);  // dropped candidates are listed too
  for (int r = 0; r < t->rowCount(); ++r) {
    const auto& h = want[static_cast<size_t>(r)];
    QCOMPARE(t->item(r, Inspector::Chunk)->text().toStdString(), h.chunkId);
    QCOMPARE(cellValue(t, r, Inspector::Fused), h.fusedScore);
    QCOMPARE(t->item(r, Inspector::Bm25)->data(Qt::UserRole).isValid(), h.bm25Score.has_value());
    if (h.bm25Score) QCOMPARE(cellValue(t, r, Inspector::Bm25), *h.bm25Score);
    QCOMPARE(t->item(r, Inspector::Bm25Rank)->data(Qt::UserRole).toInt(), h.bm25Rank);
    QVERIFY(h.denseCosine.has_value());  // 15 chunks < 50 candidates: all are dense candidates
    QVERIFY(std::abs(cellValue(t, r, Inspector::DenseCos) - *h.denseCosine) < 1e-5);
    QCOMPARE(t->item(r, Inspector::DenseRank)->data(Qt::UserRole).toInt(), h.denseRank);
    QCOMPARE(t->item(r, Inspector::Kept)->text() == "kept", h.kept);
    QCOMPARE(t->item(r, Inspector::Why)->text().toStdString(), h.threshold);
  }
  // The prompt: the default template with the kept hits, the persona's name among them; the
  // answer is the model's greedy answer to exactly that prompt.
  const std::string prompt = e[0].retrieval->prompt;
  QVERIFY(prompt.rfind("次の参考情報を使って答えてください。\n[1] ", 0) == 0);
  QVERIFY(prompt.find("名前は小野寺絢音") != std::string::npos);
  QVERIFY(prompt.find("質問: " + kNameQuery.toStdString()) != std::string::npos);
  int inPrompt = 0;
  for (int r = 0; r < t->rowCount(); ++r) inPrompt += t->item(r, Inspector::InPrompt)->text() == "✓";
  int keptByCore = 0;
  for (const auto& h : want) keptByCore += h.kept;
  QCOMPARE(inPrompt, std::min(3, keptByCore));
  kh::ModelFolder folder = kh::ModelFolder::open(model_);
  kh::ChatSession chat(folder, kh::Model::load(folder), folder.requireTokenizer());
  chat.sampling.temperature = 0;
  chat.sampling.topP = 1.0;
  chat.sampling.topK = 0;
  chat.sampling.minP = 0.0;
  chat.sampling.repetitionPenalty = 1.0;
  chat.sampling.maxNewTokens = 16;
  QCOMPARE(e[1].content.toStdString(), chat.reply(prompt).text);
  // The retrieval goes into the export with the message.
  const QJsonObject j = QJsonDocument::fromJson(pane_->exportJson().toUtf8()).object();
  const QJsonObject r0 = j["messages"].toArray()[0].toObject()["retrieval"].toObject();
  QCOMPARE(r0["hits"].toArray().size(), t->rowCount());
  QCOMPARE(r0["hits"].toArray()[0].toObject()["doc_id"].toString(), QString("persona-name"));
}

void RagInspectorTest::thresholdPreviewMatchesRecount() {
  Inspector* in = pane_->inspector();
  QTableWidget* t = in->table();
  auto* mode = in->findChild<QComboBox*>("threshold_mode");
  auto* value = in->findChild<QDoubleSpinBox*>("threshold_value");
  auto* slider = in->findChild<QSlider*>("threshold_slider");
  QVERIFY(mode && value && slider);
  std::set<int> counts;
  auto check = [&](const kh::RagThreshold& th) {
    const int want = recount(t, th);
    int shownKept = 0;
    for (int r = 0; r < t->rowCount(); ++r) {
      const bool kept = t->item(r, Inspector::Kept)->text() == "kept";
      shownKept += kept;
      // dropped rows are greyed, kept ones are not
      QCOMPARE(t->item(r, Inspector::Text)->foreground().color() == Inspector::droppedColor(), !kept);
    }
    QVERIFY2(shownKept == want, qPrintable(QString("%1 %2 %3: shown %4, recount %5").arg(QString::fromStdString(th.mode))
                                              .arg(th.ratio).arg(th.zMin).arg(shownKept).arg(want)));
    QCOMPARE(in->keptCount(), want);
    QVERIFY(in->summary().startsWith(QString::number(want) + " of "));
    counts.insert(want);
    // Re-thresholding the stored hits says what searching again with that threshold says.
    const auto again = coreSearch(kNameQuery, th);
    QCOMPARE(t->rowCount(), int(again.size()));
    for (int r = 0; r < t->rowCount(); ++r) {
      QCOMPARE(t->item(r, Inspector::Kept)->text() == "kept", again[static_cast<size_t>(r)].kept);
      QCOMPARE(t->item(r, Inspector::Why)->text().toStdString(), again[static_cast<size_t>(r)].threshold);
    }
  };
  // Relative: through the slider (as a user drags it) and the spin box.
  mode->setCurrentIndex(mode->findData("relative"));
  for (int v : {0, 30, 55, 62, 80, 100}) {
    slider->setValue(v);
    QCOMPARE(value->value(), v / 100.0);
    check(in->threshold());
    QCOMPARE(in->threshold().ratio, v / 100.0);
  }
  QVERIFY2(counts.size() >= 3, "the relative threshold must change what is kept on this turn");
  QCOMPARE(*counts.rbegin(), t->rowCount());  // ratio 0 keeps everything
  counts.clear();
  mode->setCurrentIndex(mode->findData("zscore"));
  for (double z : {-1.0, 0.0, 0.5, 1.5, 3.0}) {
    value->setValue(z);
    QCOMPARE(in->threshold().mode, std::string("zscore"));
    check(in->threshold());
  }
  QVERIFY(counts.size() >= 3);
  mode->setCurrentIndex(mode->findData("none"));
  check(in->threshold());
  QCOMPARE(in->keptCount(), t->rowCount());
  // The preview never changes what was sent: the in-prompt marks stay.
  int inPrompt = 0;
  for (int r = 0; r < t->rowCount(); ++r) inPrompt += t->item(r, Inspector::InPrompt)->text() == "✓";
  QVERIFY(inPrompt > 0);
  in->setThreshold(kh::RagThreshold{});  // back to the default for the next test
}

void RagInspectorTest::openSourceShowsTheDocument() {
  Inspector* in = pane_->inspector();
  std::unique_ptr<kh::gui::SourceDialog> d(in->openSource(0, false));
  QVERIFY(d);
  QCOMPARE(d->source().docId, std::string("persona-name"));
  const QString text = docTextFromFile("persona-name");
  QVERIFY(!text.isEmpty());
  QCOMPARE(d->viewer()->toPlainText(), text);
  QCOMPARE(d->highlightedText(), QString::fromStdString(pane_->column()->entries()[0].retrieval->hits[0].text));
  QVERIFY(d->highlightedText().contains("名前は小野寺絢音"));
  QVERIFY(d->source().note.empty());
  QVERIFY(QString::fromStdString(d->source().path).endsWith("resources/retrieval/ja_persona_docs.jsonl"));
  QVERIFY(d->source().line >= 1);
  // A double-click on another row opens that row's document.
  const int before = in->findChildren<kh::gui::SourceDialog*>().size();
  Q_EMIT in->table()->cellDoubleClicked(1, 0);
  const auto dialogs = in->findChildren<kh::gui::SourceDialog*>();
  QCOMPARE(int(dialogs.size()), before + 1);
  auto* opened = dialogs.back();
  QCOMPARE(QString::fromStdString(opened->source().docId), in->table()->item(1, Inspector::Doc)->text());
  QCOMPARE(opened->viewer()->toPlainText(), docTextFromFile(in->table()->item(1, Inspector::Doc)->text()));
  opened->close();

  // A chunk in the middle of a longer file: the whole file, that chunk highlighted where it is.
  int row = -1;
  for (int r = 0; r < in->table()->rowCount(); ++r)
    if (in->table()->item(r, Inspector::Chunk)->text() == "notes.md#1") row = r;
  QVERIFY(row >= 0);
  const QString notes = QString::fromUtf8(kNotes);
  std::unique_ptr<kh::gui::SourceDialog> n(in->openSource(row, false));
  QVERIFY(n);
  QCOMPARE(n->viewer()->toPlainText(), notes);
  const QString chunk = QString::fromStdString(pane_->column()->entries()[0].retrieval->hits[static_cast<size_t>(row)].text);
  QCOMPARE(n->highlightedText(), chunk);
  QVERIFY(notes.indexOf(chunk) > 0);
  QCOMPARE(n->viewer()->textCursor().position(), notes.indexOf(chunk));
  QVERIFY(n->source().note.empty());
  // The file changed since import: the text is rebuilt from the stored chunks, and says so.
  QFile f(tmp_.path() + "/notes.md");
  QVERIFY(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
  f.write(QByteArray("前書き。") + kNotes);
  f.close();
  std::unique_ptr<kh::gui::SourceDialog> changed(in->openSource(row, false));
  QVERIFY(changed);
  QVERIFY(changed->source().note.find("changed") != std::string::npos);
  QCOMPARE(changed->highlightedText(), chunk);
}

void RagInspectorTest::eachTurnKeepsItsOwnHits() {
  QSignalSpy done(pane_->column(), &kh::gui::ChatColumn::replyFinished);
  pane_->input()->setPlainText(kHobbyQuery);
  pane_->send();
  QVERIFY(done.wait(15000));
  const auto& e = pane_->column()->entries();
  QCOMPARE(int(e.size()), 4);
  QVERIFY(e[0].retrieval && e[2].retrieval);
  Inspector* in = pane_->inspector();
  QCOMPARE(in->selectedTurn(), 2);  // the newest turn is shown
  QTableWidget* t = in->table();
  const auto hobby = coreSearch(kHobbyQuery), name = coreSearch(kNameQuery);
  QCOMPARE(t->item(0, Inspector::Chunk)->text().toStdString(), hobby[0].chunkId);
  QVERIFY(hobby[0].chunkId != name[0].chunkId);
  // Back to the first turn: its own hits, not the newest ones.
  QVERIFY(in->selectTurn(0));
  QCOMPARE(t->rowCount(), int(name.size()));
  for (int r = 0; r < t->rowCount(); ++r) QCOMPARE(t->item(r, Inspector::Chunk)->text().toStdString(), name[static_cast<size_t>(r)].chunkId);
  QVERIFY(!in->selectTurn(1));  // an answer has no retrieval of its own
  // The transcript's link selects a turn too.
  QVERIFY(in->selectTurn(2));
  Q_EMIT pane_->column()->retrievalRequested(0);
  QCOMPARE(in->selectedTurn(), 0);
  // Detached: the next turn is asked without retrieval and has none.
  pane_->documentsBox()->detach();
  pane_->input()->setPlainText("こんにちは");
  pane_->send();
  QVERIFY(done.wait(15000));
  QVERIFY(!pane_->column()->entries()[4].retrieval);
  pane_->toggleInspector();
  QVERIFY(pane_->inspector()->isHidden());
  pane_->toggleInspector();
  QVERIFY(!pane_->inspector()->isHidden());
}

// docs/screenshots/chat-rag.png: the first turn, a threshold that drops a few rows.
void RagInspectorTest::screenshot() {
  const QByteArray dir = qgetenv("KH_SCREENSHOT_DIR");
  if (dir.isEmpty()) QSKIP("set KH_SCREENSHOT_DIR to save chat-rag.png");
  pane_->inspector()->setThreshold(kh::RagThreshold{"relative", 0.6, 0.0});
  pane_->resize(1700, 760);
  pane_->show();
  if (auto* split = pane_->findChild<QSplitter*>()) split->setSizes({420, 1000, 280});
  QApplication::processEvents();
  QVERIFY(pane_->grab().save(QString::fromLocal8Bit(dir) + "/chat-rag.png"));
  pane_->hide();
  pane_->inspector()->setThreshold(kh::RagThreshold{});
}

// A reranker model folder and k in the Documents box: the inspector's rerank column shows, for
// exactly the best k fused candidates, the scores core's reranker gives each pair on its own, in
// that order, and the kept verdicts recount from them.
void RagInspectorTest::rerankerColumnShowsItsScores() {
  kh::gui::ChatPane pane;
  pane.setEngine(engine_);
  pane.settingsBox()->setSettings(testSettings());
  auto* docs = pane.documentsBox();
  QSignalSpy attached(docs, &kh::gui::DocumentsBox::attached);
  docs->setStoreDir(QString::fromStdString(store_));
  docs->attach();
  QVERIFY(attached.wait(15000));
  docs->findChild<QLineEdit*>("rerank_dir")->setText(QString::fromStdString(model_));
  docs->findChild<QSpinBox*>("rerank_k")->setValue(4);
  docs->findChild<QLineEdit*>("rerank_answers")->setText("Y,N");  // single tokens of the tiny vocabulary
  QSignalSpy done(pane.column(), &kh::gui::ChatColumn::replyFinished);
  pane.input()->setPlainText(kNameQuery);
  pane.send();
  QVERIFY(done.wait(30000));
  QTableWidget* t = pane.inspector()->table();
  const auto fused = coreSearch(kNameQuery);  // no reranker: the fused order
  QCOMPARE(t->rowCount(), int(fused.size()));  // every candidate, the 4 rescored first
  for (int r = 4; r < t->rowCount(); ++r) {
    QCOMPARE(t->item(r, Inspector::Chunk)->text().toStdString(), fused[size_t(r)].chunkId);
    QVERIFY(!t->item(r, Inspector::Rerank)->data(Qt::UserRole).isValid());
    QVERIFY2(t->item(r, Inspector::Why)->text().startsWith("not reranked"), qPrintable(t->item(r, Inspector::Why)->text()));
  }
  std::set<std::string> best4;
  for (size_t i = 0; i < 4; ++i) best4.insert(fused[i].chunkId);
  kh::retrieval::RerankOptions ro;
  ro.answers = std::make_pair(std::string("Y"), std::string("N"));
  kh::retrieval::DecoderReranker reranker(model_, ro);
  double prev = 1e300;
  for (int r = 0; r < 4; ++r) {
    const std::string id = t->item(r, Inspector::Chunk)->text().toStdString();
    QVERIFY2(best4.count(id), id.c_str());
    const QVariant v = t->item(r, Inspector::Rerank)->data(Qt::UserRole);
    QVERIFY(v.isValid());
    const auto& h = *std::find_if(fused.begin(), fused.end(), [&](const auto& x) { return x.chunkId == id; });
    QVERIFY(std::abs(v.toDouble() - *reranker.score(kNameQuery.toStdString(), h.text)) < 2e-4);
    QVERIFY(v.toDouble() <= prev);
    prev = v.toDouble();
    QVERIFY(t->item(r, Inspector::Why)->text().startsWith("rerank"));
  }
  QCOMPARE(pane.inspector()->keptCount(), recount(t, kh::RagThreshold{}));
  QVERIFY(pane.column()->entries()[0].retrieval->reranker.find("decoder-yesno:") == 0);
}

// A store embedded by a ruri v1/v2-style encoder (MeCab words): the Documents box's dictionary
// field is what its query tokenizer opens; a folder that is no dictionary is refused by name.
void RagInspectorTest::mecabDictionaryFieldOpensARuriStore() {
  const std::string dic = kh::test::compileTinyMecabDictionary((tmp_.path() + "/mecab_dic").toStdString());
  const std::string ruri = kh::test::sourceDir() + "/tests/golden/encoder/ruri_tiny";
  const std::string store = (tmp_.path() + "/ruri_store").toStdString();
  const QString doc = QStringLiteral("名前は小野寺絢音");
  {
    kh::test::ScopedEnv env("KUMIHIMO_MECAB_DIC", dic);
    kh::retrieval::EncoderEmbedder emb(ruri);
    auto s = kh::retrieval::DocumentStore::open(store);
    s.setEmbedderModel("encoder:" + ruri);
    QFile f(tmp_.path() + "/persona.txt");
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write(doc.toUtf8());
    f.close();
    QCOMPARE(s.importFiles({f.fileName().toStdString()}, &emb).added, 1);
  }
  kh::test::ScopedEnv noEnv("KUMIHIMO_MECAB_DIC", nullptr);
  kh::gui::ChatPane pane;
  auto* docs = pane.documentsBox();
  auto* field = docs->findChild<QLineEdit*>("mecab_dic");
  QVERIFY(field);
  docs->setStoreDir(QString::fromStdString(store));
  {
    QSignalSpy failed(docs, &kh::gui::DocumentsBox::attachFailed);
    field->setText(tmp_.path());  // a folder, but no dicrc / sys.dic
    docs->attach();
    QVERIFY(failed.wait(15000));
    const QString why = failed.first().first().toString();
    QVERIFY2(why.contains(tmp_.path()), qPrintable(why));
  }
  QSignalSpy attached(docs, &kh::gui::DocumentsBox::attached);
  std::shared_ptr<kh::RagStore> opened;
  connect(docs, &kh::gui::DocumentsBox::attached, this, [&](std::shared_ptr<kh::RagStore> s) { opened = s; });
  field->setText(QString::fromStdString(dic));
  docs->attach();
  QVERIFY(attached.wait(15000));
  QVERIFY2(docs->status().contains("dense by encoder-mean:ruri_tiny"), qPrintable(docs->status()));
  QVERIFY(opened);
  // The query is embedded through the field's dictionary: its cosine with the document is the one
  // the core embedder gives with that dictionary named in the environment.
  kh::RagSettings rs;
  rs.k = 1;
  const kh::RagRetrieval r = opened->retrieve(doc.toStdString(), rs);
  QVERIFY(!r.hits.empty());
  QVERIFY(r.hits.front().denseCosine.has_value());
  double expected = 0;
  {
    kh::test::ScopedEnv env("KUMIHIMO_MECAB_DIC", dic);
    kh::setMecabDictionary("");
    kh::retrieval::EncoderEmbedder emb(ruri);
    const auto q = emb.embedQuery(doc.toStdString());
    const auto d = emb.embed({doc.toStdString()});
    for (size_t i = 0; i < q.size(); ++i) expected += static_cast<double>(q[i]) * d[i];
  }
  QVERIFY2(std::abs(*r.hits.front().denseCosine - expected) < 1e-4,
           qPrintable(QString("%1 vs %2").arg(*r.hits.front().denseCosine).arg(expected)));
  kh::setMecabDictionary("");
}

// A store whose dense index file is damaged: attaching says so and offers "Rebuild indexes"; the
// rebuild (on the worker) re-embeds the stored chunks with the recorded model and attaches, and
// the rebuilt store answers as the intact one did.
void RagInspectorTest::corruptIndexOffersARebuild() {
  namespace fs = std::filesystem;
  const std::string copy = (tmp_.path() + "/store-damaged").toStdString();
  fs::copy(store_, copy, fs::copy_options::recursive);
  std::string gen;
  {
    std::ifstream cur(copy + "/CURRENT");
    std::getline(cur, gen);
  }
  std::ofstream(copy + "/" + gen + "/dense.faiss", std::ios::trunc) << "garbage";
  kh::gui::ChatPane pane;
  auto* docs = pane.documentsBox();
  auto* rebuild = docs->findChild<QPushButton*>("rebuild_store");
  QVERIFY(rebuild);
  QVERIFY(!docs->rebuildOffered());
  QSignalSpy failed(docs, &kh::gui::DocumentsBox::attachFailed);
  docs->setStoreDir(QString::fromStdString(copy));
  docs->attach();
  QVERIFY(failed.wait(15000));
  QVERIFY2(failed.at(0).at(0).toString().contains("corrupt dense index"), qPrintable(failed.at(0).at(0).toString()));
  QVERIFY(docs->rebuildOffered());
  QSignalSpy attached(docs, &kh::gui::DocumentsBox::attached);
  QTest::mouseClick(rebuild, Qt::LeftButton);
  QVERIFY(attached.wait(30000));
  QVERIFY(!docs->rebuildOffered());
  QVERIFY2(docs->status().contains("16 documents") && docs->status().contains("dense by encoder-mean:tiny-ja-embedder"), qPrintable(docs->status()));
  kh::retrieval::EncoderEmbedder emb(embedderDir());
  kh::retrieval::SearchOptions o;
  o.k = 1000;
  const auto want = coreSearch(kNameQuery);
  const auto got = kh::retrieval::DocumentStore::open(copy).search(QString(kNameQuery).toStdString(), o, &emb);
  QCOMPARE(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    QCOMPARE(got[i].chunkId, want[i].chunkId);
    QVERIFY(got[i].denseCosine.has_value() && want[i].denseCosine.has_value());
    QVERIFY(std::fabs(*got[i].denseCosine - *want[i].denseCosine) < 1e-6);
  }
}

// "Add files…" / "Add folder…" on a folder that is no store yet: the box builds it on the worker
// with the embedder field's model and attaches it; it then answers as a store built by core
// directly from the same files; importing again changes nothing; a binary file is refused, named,
// and the store stays as it was.
void RagInspectorTest::importBuildsAStoreFromTheBox() {
  const std::string dir = (tmp_.path() + "/store-from-box").toStdString();
  kh::gui::ChatPane pane;
  auto* docs = pane.documentsBox();
  QVERIFY(docs->findChild<QPushButton*>("import_files"));
  QVERIFY(docs->findChild<QPushButton*>("import_folder"));
  docs->setStoreDir(QString::fromStdString(dir));
  docs->findChild<QLineEdit*>("embedder_dir")->setText(QString::fromStdString(embedderDir()));
  QSignalSpy imported(docs, &kh::gui::DocumentsBox::imported);
  QSignalSpy attached(docs, &kh::gui::DocumentsBox::attached);
  // The fixture's note as it was imported (openSourceShowsTheDocument edits that file since).
  QVERIFY(QDir().mkpath(tmp_.path() + "/box"));
  const QString notes = tmp_.path() + "/box/notes.md";
  {
    QFile f(notes);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write(kNotes);
  }
  docs->importDocuments({QString::fromStdString(docsFile()), notes});
  QVERIFY(attached.wait(60000));
  QCOMPARE(imported.count(), 1);
  QVERIFY2(imported.at(0).at(0).toString().startsWith("16 added, 0 updated, 0 unchanged"), qPrintable(imported.at(0).at(0).toString()));
  QVERIFY2(docs->status().contains("16 documents") && docs->status().contains("dense by encoder-mean:tiny-ja-embedder"), qPrintable(docs->status()));
  // The same hits, scores and ranks as the fixture's store, which core built from the same files.
  kh::retrieval::EncoderEmbedder emb(embedderDir());
  kh::retrieval::SearchOptions o;
  o.k = 1000;
  const auto want = coreSearch(kNameQuery);
  const auto got = kh::retrieval::DocumentStore::open(dir).search(kNameQuery.toStdString(), o, &emb);
  QCOMPARE(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    QCOMPARE(got[i].chunkId, want[i].chunkId);
    QCOMPARE(got[i].bm25Rank, want[i].bm25Rank);
    QCOMPARE(got[i].denseCosine.has_value(), want[i].denseCosine.has_value());
    if (got[i].denseCosine) QVERIFY(std::fabs(*got[i].denseCosine - *want[i].denseCosine) < 1e-6);
  }
  // Again, with the embedder field cleared: the store's recorded model is used, nothing is redone.
  docs->findChild<QLineEdit*>("embedder_dir")->clear();
  docs->importDocuments({QString::fromStdString(docsFile()), notes});
  QVERIFY(attached.wait(60000));
  QVERIFY2(imported.at(1).at(0).toString().startsWith("0 added, 0 updated, 16 unchanged"), qPrintable(imported.at(1).at(0).toString()));
  QVERIFY2(docs->status().startsWith("imported: 0 added"), qPrintable(docs->status()));
  // Bad input: a binary file is refused by name, in one line; the store keeps its 16 documents.
  const QString binary = tmp_.path() + "/weights.txt";
  {
    QFile f(binary);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write(QByteArray("\x00\x01\x02\xff\xfe", 5));
  }
  QSignalSpy failed(docs, &kh::gui::DocumentsBox::attachFailed);
  docs->importDocuments({binary});
  QVERIFY(failed.wait(30000));
  const QString msg = failed.at(0).at(0).toString();
  QVERIFY2(msg.contains("weights.txt") && !msg.contains('\n'), qPrintable(msg));
  QCOMPARE(kh::retrieval::DocumentStore::open(dir).documents().size(), size_t(16));
}

void RagInspectorTest::cleanupTestCase() { pane_.reset(); }

QTEST_MAIN(RagInspectorTest)
#include "test_rag_inspector.moc"
