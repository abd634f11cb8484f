// ComparePane (see compare_pane.h).
#include "widgets/chat/compare_pane.h"

#include <QHBoxLayout>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QPushButton>
#include <QSplitter>
#include <QVBoxLayout>

#include "widgets/chat/chat_pane.h"
#include "widgets/chat/torch_free.h"

namespace kh::gui {

ComparePane::ComparePane(QWidget* parent, RunOnWorker runOnWorker) : QWidget(parent) {
  if (!runOnWorker) {
    ownWorker_ = std::make_unique<ChatWorker>();
    runOnWorker = ownWorker_->runner();
  }
  a_ = new ChatColumn(runOnWorker, this);
  b_ = new ChatColumn(runOnWorker, this);
  a_->setObjectName("column_a");
  b_->setObjectName("column_b");
  settings_ = new SamplingSettingsBox(this);
  input_ = new MessageBox(this);
  send_ = new QPushButton(tr("Send to both"), this);
  stop_ = new QPushButton(tr("Stop"), this);
  regenerate_ = new QPushButton(tr("Regenerate"), this);
  clear_ = new QPushButton(tr("Clear"), this);

  auto* columns = new QSplitter(Qt::Horizontal, this);
  columns->addWidget(a_);
  columns->addWidget(b_);
  auto* left = new QWidget(this);
  auto* leftLay = new QVBoxLayout(left);
  leftLay->setContentsMargins(0, 0, 0, 0);
  leftLay->addWidget(columns, 1);
  addInputArea(leftLay, input_, send_, stop_, regenerate_, clear_);
  auto* split = new QSplitter(this);
  split->addWidget(left);
  split->addWidget(settings_);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 1);
  auto* lay = new QVBoxLayout(this);
  lay->addWidget(split);

  connect(input_, &MessageBox::sendRequested, this, &ComparePane::send);
  connect(send_, &QPushButton::clicked, this, &ComparePane::send);
  connect(stop_, &QPushButton::clicked, this, &ComparePane::stop);
  connect(regenerate_, &QPushButton::clicked, this, &ComparePane::regenerate);
  connect(clear_, &QPushButton::clicked, this, [this]() { a_->clear(); b_->clear(); });
  for (ChatColumn* c : {a_, b_}) {
    connect(c, &ChatColumn::busyChanged, this, &ComparePane::updateButtons);
    connect(c, &ChatColumn::replyFinished, this, &ComparePane::columnDone);
    connect(c, &ChatColumn::replyFailed, this, &ComparePane::columnDone);
  }
  updateButtons();
}

ComparePane::~ComparePane() {
  a_->stop();
  b_->stop();
}

void ComparePane::setEngines(std::shared_ptr<kh::ChatEngine> a, std::shared_ptr<kh::ChatEngine> b) {
  a_->setEngine(std::move(a));
  b_->setEngine(std::move(b));
  updateButtons();
}

void ComparePane::setEngine(int column, std::shared_ptr<kh::ChatEngine> engine) {
  (column == 0 ? a_ : b_)->setEngine(std::move(engine));
  updateButtons();
}

void ComparePane::send() {
  if (busy() || !a_->engine() || !b_->engine()) return;
  const QString text = input_->toPlainText();
  const kh::ChatSettings s = settings_->settings();
  // Both queue on the worker now: A answers, then B; each column streams as its answer runs.
  running_ = 0;
  if (a_->ask(text, s)) ++running_;
  if (b_->ask(text, s)) ++running_;
  if (running_ > 0) input_->clear();
}

void ComparePane::stop() {
  a_->stop();
  b_->stop();
}

void ComparePane::regenerate() {
  if (busy()) return;
  const kh::ChatSettings s = settings_->settings();
  running_ = 0;
  if (a_->regenerate(s)) ++running_;
  if (b_->regenerate(s)) ++running_;
}

void ComparePane::columnDone() {
  if (running_ > 0 && --running_ == 0) Q_EMIT bothFinished();
}

void ComparePane::updateButtons() {
  const bool ready = a_->engine() && b_->engine();
  send_->setEnabled(ready && !busy());
  stop_->setEnabled(busy());
  regenerate_->setEnabled(ready && !busy() && !a_->entries().empty());
  clear_->setEnabled(!busy());
}

QString ComparePane::exportJson() const {
  QJsonObject o;
  o["settings"] = settingsJson(settings_->settings());
  o["columns"] = QJsonArray{a_->toJson(), b_->toJson()};
  return QString::fromUtf8(QJsonDocument(o).toJson(QJsonDocument::Indented));
}

}  // namespace kh::gui
