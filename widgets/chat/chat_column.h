// One model's side of a chat: the transcript (user/assistant messages with per-answer stats and a
// copy link), and the streaming of answers from a ChatEngine running on the worker. With a document
// store attached, each user turn is first searched on the worker and sent through the RAG template;
// what was retrieved is kept with that turn's entry. Text arrives
// as queued, coalesced chunks at most every streamIntervalMs (default 50 ms, ~20 Hz).
// Never calls the engine on the UI thread; never lets an exception cross into Qt.
#pragma once

#include <QJsonObject>
#include <QString>
#include <QWidget>

#include <atomic>
#include <memory>
#include <vector>

#include "core/jobs/chat_engine.h"
#include "widgets/chat/chat_worker.h"

class QTextBrowser;
class QLabel;

namespace kh::gui {

struct ChatEntry {
  QString role;      // "user" | "assistant"
  QString content;
  bool streaming = false;
  bool hasStats = false;
  kh::ReplyStats stats;
  QString error;     // the kh::Error text when the answer failed
  std::shared_ptr<const kh::RagRetrieval> retrieval;  // user turns asked with a store attached
};

class ChatColumn : public QWidget {
  Q_OBJECT
 public:
  ChatColumn(RunOnWorker runOnWorker, QWidget* parent = nullptr);
  ~ChatColumn() override;

  void setEngine(std::shared_ptr<kh::ChatEngine> engine);
  std::shared_ptr<kh::ChatEngine> engine() const { return engine_; }
  void setTitle(const QString& title);
  void setStreamIntervalMs(int ms) { intervalMs_ = ms; }

  // Retrieval-augmented chat: the store the next turns are searched in (null: none) and how.
  void setRagStore(std::shared_ptr<kh::RagStore> store) { ragStore_ = std::move(store); }
  std::shared_ptr<kh::RagStore> ragStore() const { return ragStore_; }
  void setRagSettings(const kh::RagSettings& s) { ragSettings_ = s; }
  const kh::RagSettings& ragSettings() const { return ragSettings_; }

  bool busy() const { return current_ != nullptr; }
  // Appends the user turn and starts the answer. False (and nothing changes) while busy or
  // without an engine.
  bool ask(const QString& user, const kh::ChatSettings& settings);
  // Drops the last answer and answers the last user turn again.
  bool regenerate(const kh::ChatSettings& settings);
  void stop();    // cancels the running answer (it is kept as far as it got)
  void clear();   // forgets the conversation (stops first)

  const std::vector<ChatEntry>& entries() const { return entries_; }
  void copyMessage(int index) const;  // to the clipboard
  QJsonObject toJson() const;         // {"model", "messages": [{role, content, stats?, retrieval?}]}
  QString toMarkdown() const;

 Q_SIGNALS:
  void chunkArrived(const QString& text);
  void replyFinished(const QString& stopReason);  // "cancelled" for a stopped answer
  void replyFailed(const QString& message);
  void busyChanged(bool busy);
  void retrievalArrived(int entryIndex);     // entries()[entryIndex].retrieval was just set
  void retrievalRequested(int entryIndex);   // the user clicked a turn's "retrieved" link
  void entriesChanged();                     // turns added, replaced or cleared

 private:
  struct Stream;
  void start(const kh::ChatSettings& settings);
  void deliver(const std::shared_ptr<Stream>& s);
  void setRetrieval(const std::shared_ptr<Stream>& s, size_t entry, std::shared_ptr<const kh::RagRetrieval> r);
  void finish(const std::shared_ptr<Stream>& s, const kh::ReplyStats& stats, const QString& error);
  void render();

  RunOnWorker run_;
  std::shared_ptr<kh::ChatEngine> engine_;
  std::shared_ptr<UiChannel> channel_;
  std::shared_ptr<Stream> current_;
  std::vector<ChatEntry> entries_;
  std::shared_ptr<kh::RagStore> ragStore_;
  kh::RagSettings ragSettings_;
  int intervalMs_ = 50;
  QLabel* title_;
  QTextBrowser* view_;
};

// "12.3 tokens/s · first token 45 ms · 40 tokens · stop: eos"
QString statsLine(const kh::ReplyStats& s);
// A turn's retrieval as it goes into an export file: store, method, prompt, every hit's scores.
QJsonObject retrievalJson(const kh::RagRetrieval& r);

}  // namespace kh::gui
