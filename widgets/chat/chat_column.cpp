// ChatColumn (see chat_column.h).
#include "widgets/chat/chat_column.h"

#include <QApplication>
#include <QClipboard>
#include <QElapsedTimer>
#include <QJsonArray>
#include <QLabel>
#include <QPointer>
#include <QScrollBar>
#include <QTextBrowser>
#include <QUrl>
#include <QVBoxLayout>

#include <exception>
#include <mutex>
#include <string>

#include "widgets/chat/torch_free.h"

namespace kh::gui {

// One answer in flight. The worker appends text; the UI takes it. `pending` coalesces the chunks
// between two deliveries; a delivery is posted only when none is queued and the interval passed.
struct ChatColumn::Stream {
  std::atomic<bool> cancel{false};
  std::mutex m;
  std::string pending;
  bool deliveryQueued = false;
  QElapsedTimer sinceDelivery;
  int intervalMs = 50;
};

ChatColumn::ChatColumn(RunOnWorker runOnWorker, QWidget* parent)
    : QWidget(parent), run_(std::move(runOnWorker)), channel_(std::make_shared<UiChannel>(this)) {
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  title_ = new QLabel(tr("No model loaded"), this);
  title_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  title_->setWordWrap(true);
  view_ = new QTextBrowser(this);
  view_->setOpenLinks(false);
  view_->setObjectName("transcript");
  lay->addWidget(title_);
  lay->addWidget(view_, 1);
  connect(view_, &QTextBrowser::anchorClicked, this, [this](const QUrl& url) {
    if (url.scheme() == "copy") copyMessage(url.path().toInt());
    if (url.scheme() == "rag") Q_EMIT retrievalRequested(url.path().toInt());
  });
  render();
}

ChatColumn::~ChatColumn() {
  channel_->close();
  if (current_) current_->cancel = true;
}

void ChatColumn::setEngine(std::shared_ptr<kh::ChatEngine> engine) {
  stop();
  engine_ = std::move(engine);
  setTitle(engine_ ? QString::fromStdString(engine_->describe()) : tr("No model loaded"));
}

void ChatColumn::setTitle(const QString& title) { title_->setText(title); }

bool ChatColumn::ask(const QString& user, const kh::ChatSettings& settings) {
  if (busy() || !engine_ || user.trimmed().isEmpty()) return false;
  ChatEntry turn;
  turn.role = "user";
  turn.content = user;
  entries_.push_back(turn);
  start(settings);
  return true;
}

bool ChatColumn::regenerate(const kh::ChatSettings& settings) {
  if (busy() || !engine_ || entries_.empty()) return false;
  if (entries_.back().role == "assistant") entries_.pop_back();
  if (entries_.empty() || entries_.back().role != "user") return false;
  entries_.back().retrieval.reset();  // searched again (the store or its settings may have changed)
  start(settings);
  return true;
}

void ChatColumn::stop() {
  if (current_) current_->cancel = true;
}

void ChatColumn::clear() {
  stop();
  if (busy()) return;  // the running answer finishes (cancelled) first; clear again then
  entries_.clear();
  render();
  Q_EMIT entriesChanged();
}

void ChatColumn::start(const kh::ChatSettings& settings) {
  // Earlier turns go in as the model saw them (with their retrieved context), as the CLI's chat does.
  std::vector<kh::ChatTurn> conversation;
  for (const auto& e : entries_)
    conversation.push_back({e.role.toStdString(), e.retrieval ? e.retrieval->prompt : e.content.toStdString()});
  const size_t userEntry = entries_.size() - 1;
  ChatEntry answer;
  answer.role = "assistant";
  answer.streaming = true;
  entries_.push_back(answer);
  auto s = std::make_shared<Stream>();
  s->intervalMs = intervalMs_;
  s->sinceDelivery.start();
  current_ = s;
  render();
  Q_EMIT busyChanged(true);
  Q_EMIT entriesChanged();

  auto engine = engine_;
  auto channel = channel_;
  auto store = ragStore_;
  const kh::RagSettings rag = ragSettings_;
  QPointer<ChatColumn> self(this);  // used on the UI thread only
  run_([engine, channel, s, conversation, settings, self, store, rag, userEntry]() mutable {
    kh::ReplyStats stats;
    QString error;
    try {
      if (store) {
        auto r = std::make_shared<const kh::RagRetrieval>(store->retrieve(conversation.back().content, rag));
        conversation.back().content = r->prompt;
        channel->post([self, s, userEntry, r]() { if (self) self->setRetrieval(s, userEntry, r); });
      }
      stats = engine->reply(
          conversation, settings,
          [&](const std::string& text) {
            std::lock_guard<std::mutex> lock(s->m);
            s->pending += text;
            if (!s->deliveryQueued && s->sinceDelivery.elapsed() >= s->intervalMs) {
              s->deliveryQueued = true;
              s->sinceDelivery.restart();
              channel->post([self, s]() { if (self) self->deliver(s); });
            }
          },
          &s->cancel);
    } catch (const std::exception& e) {
      error = QString::fromStdString(e.what());
    }
    channel->post([self, s, stats, error]() { if (self) self->finish(s, stats, error); });
  });
}

void ChatColumn::deliver(const std::shared_ptr<Stream>& s) {
  std::string text;
  {
    std::lock_guard<std::mutex> lock(s->m);
    text.swap(s->pending);
    s->deliveryQueued = false;
  }
  if (s != current_ || text.empty() || entries_.empty()) return;
  const QString chunk = QString::fromStdString(text);
  entries_.back().content += chunk;
  render();
  Q_EMIT chunkArrived(chunk);
}

void ChatColumn::setRetrieval(const std::shared_ptr<Stream>& s, size_t entry, std::shared_ptr<const kh::RagRetrieval> r) {
  if (s != current_ || entry >= entries_.size()) return;
  entries_[entry].retrieval = std::move(r);
  render();
  Q_EMIT retrievalArrived(static_cast<int>(entry));
}

void ChatColumn::finish(const std::shared_ptr<Stream>& s, const kh::ReplyStats& stats, const QString& error) {
  if (s != current_) return;
  deliver(s);
  ChatEntry& e = entries_.back();
  e.streaming = false;
  if (error.isEmpty()) {
    e.hasStats = true;
    e.stats = stats;
    e.content = QString::fromStdString(stats.text);  // the engine's answer is the truth
  } else {
    e.error = error;
  }
  current_.reset();
  render();
  Q_EMIT busyChanged(false);
  if (error.isEmpty())
    Q_EMIT replyFinished(QString::fromStdString(stats.stopReason));
  else
    Q_EMIT replyFailed(error);
}

QString statsLine(const kh::ReplyStats& s) {
  return QString("%1 tokens/s · first token %2 ms · %3 tokens after %4 · stop: %5")
      .arg(s.tokensPerSecond, 0, 'f', 1)
      .arg(s.timeToFirstTokenMs, 0, 'f', 0)
      .arg(s.newTokens)
      .arg(s.promptTokens)
      .arg(QString::fromStdString(s.stopReason));
}

void ChatColumn::render() {
  QScrollBar* bar = view_->verticalScrollBar();
  const bool atBottom = bar->value() >= bar->maximum() - 4;
  const int oldValue = bar->value();
  QString html;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const ChatEntry& e = entries_[i];
    const bool user = e.role == "user";
    html += QString("<table width='100%' cellpadding='6' style='margin-bottom:6px; background-color:%1'><tr><td>")
                .arg(user ? "#e8f0fe" : "#f4f4f4");
    html += QString("<b>%1</b> &nbsp;<a href='copy:%2' style='font-size:small'>copy</a>")
                .arg(user ? tr("You") : tr("Assistant"))
                .arg(i);
    QString body = e.content.toHtmlEscaped();
    if (e.streaming) body += "▍";
    html += "<p style='white-space:pre-wrap'>" + body + "</p>";
    if (e.retrieval) {
      int kept = 0, sent = 0;
      for (const auto& h : e.retrieval->hits) kept += h.kept, sent += h.inPrompt;
      html += QString("<p style='font-size:small'><a href='rag:%1'>%2</a></p>")
                  .arg(i)
                  .arg(tr("retrieved: %1 candidates, %2 kept, %3 in the prompt — inspect")
                           .arg(e.retrieval->hits.size()).arg(kept).arg(sent).toHtmlEscaped());
    }
    if (e.hasStats) html += "<p style='color:#666; font-size:small'>" + statsLine(e.stats).toHtmlEscaped() + "</p>";
    if (!e.error.isEmpty()) html += "<p style='color:#b00020'>" + e.error.toHtmlEscaped() + "</p>";
    html += "</td></tr></table>";
  }
  if (entries_.empty()) html = "<p style='color:#888'>" + tr("Type a message below; Enter sends, Shift+Enter starts a new line.") + "</p>";
  view_->setHtml(html);
  bar->setValue(atBottom ? bar->maximum() : oldValue);
}

void ChatColumn::copyMessage(int index) const {
  if (index < 0 || index >= static_cast<int>(entries_.size())) return;
  QApplication::clipboard()->setText(entries_[index].content);
}

QJsonObject ChatColumn::toJson() const {
  QJsonArray messages;
  for (const auto& e : entries_) {
    QJsonObject m{{"role", e.role}, {"content", e.content}};
    if (e.hasStats)
      m["stats"] = QJsonObject{{"stop_reason", QString::fromStdString(e.stats.stopReason)},
                               {"time_to_first_token_ms", e.stats.timeToFirstTokenMs},
                               {"tokens_per_second", e.stats.tokensPerSecond},
                               {"prompt_tokens", static_cast<double>(e.stats.promptTokens)},
                               {"new_tokens", static_cast<double>(e.stats.newTokens)}};
    if (!e.error.isEmpty()) m["error"] = e.error;
    if (e.retrieval) m["retrieval"] = retrievalJson(*e.retrieval);
    messages.append(m);
  }
  QJsonObject o;
  o["model"] = engine_ ? QString::fromStdString(engine_->modelDir()) : QString();
  o["messages"] = messages;
  return o;
}

QJsonObject retrievalJson(const kh::RagRetrieval& r) {
  auto opt = [](const std::optional<double>& v) { return v ? QJsonValue(*v) : QJsonValue(); };
  QJsonArray hits;
  for (const auto& h : r.hits)
    hits.append(QJsonObject{{"chunk_id", QString::fromStdString(h.chunkId)},
                            {"doc_id", QString::fromStdString(h.docId)},
                            {"dense_cosine", opt(h.denseCosine)},
                            {"dense_rank", h.denseRank},
                            {"bm25", opt(h.bm25Score)},
                            {"bm25_rank", h.bm25Rank},
                            {"fused", h.fusedScore},
                            {"rerank", opt(h.rerankScore)},
                            {"kept", h.kept},
                            {"threshold", QString::fromStdString(h.threshold)},
                            {"in_prompt", h.inPrompt}});
  const auto& t = r.settings.threshold;
  return QJsonObject{{"store", QString::fromStdString(r.storeDir)},
                     {"method", QString::fromStdString(r.method)},
                     {"threshold", QJsonObject{{"mode", QString::fromStdString(t.mode)}, {"ratio", t.ratio}, {"z", t.zMin}}},
                     {"k", r.settings.k},
                     {"reranker", QString::fromStdString(r.reranker)},
                     {"rerank_k", r.settings.rerankK},
                     {"prompt", QString::fromStdString(r.prompt)},
                     {"hits", hits}};
}

QString ChatColumn::toMarkdown() const {
  QString md;
  for (const auto& e : entries_) {
    md += e.role == "user" ? "### You\n\n" : "### Assistant\n\n";
    md += e.content + "\n\n";
    if (e.hasStats) md += "*" + statsLine(e.stats) + "*\n\n";
    if (!e.error.isEmpty()) md += "> error: " + e.error + "\n\n";
  }
  return md;
}

}  // namespace kh::gui
