// ChatPane (see chat_pane.h).
#include "widgets/chat/chat_pane.h"

#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QJsonDocument>
#include <QJsonObject>
#include <QMenu>
#include <QMessageBox>
#include <QPushButton>
#include <QShortcut>
#include <QSplitter>
#include <QVBoxLayout>

#include "widgets/chat/rag_inspector.h"
#include "widgets/chat/torch_free.h"

namespace kh::gui {

QJsonObject settingsJson(const kh::ChatSettings& s) {
  return QJsonObject{{"system", QString::fromStdString(s.system)},
                     {"temperature", s.temperature},
                     {"top_p", s.topP},
                     {"top_k", static_cast<double>(s.topK)},
                     {"min_p", s.minP},
                     {"repetition_penalty", s.repetitionPenalty},
                     {"max_new_tokens", static_cast<double>(s.maxNewTokens)},
                     {"seed", QString::number(s.seed)},  // uint64: as text, JSON numbers are doubles
                     {"template", QString::fromStdString(s.templateOverride)}};
}

ChatPane::ChatPane(QWidget* parent, RunOnWorker runOnWorker) : QWidget(parent) {
  if (!runOnWorker) {
    ownWorker_ = std::make_unique<ChatWorker>();
    runOnWorker = ownWorker_->runner();
  }
  column_ = new ChatColumn(runOnWorker, this);
  settings_ = new SamplingSettingsBox(this);
  input_ = new MessageBox(this);
  send_ = new QPushButton(tr("Send"), this);
  stop_ = new QPushButton(tr("Stop"), this);
  regenerate_ = new QPushButton(tr("Regenerate"), this);
  clear_ = new QPushButton(tr("Clear"), this);
  export_ = new QPushButton(tr("Export…"), this);

  auto* left = new QWidget(this);
  auto* leftLay = new QVBoxLayout(left);
  leftLay->setContentsMargins(0, 0, 0, 0);
  leftLay->addWidget(column_, 1);
  addInputArea(leftLay, input_, send_, stop_, regenerate_, clear_, export_);

  documents_ = new DocumentsBox(runOnWorker, this);
  documents_->setObjectName("documents");
  inspector_ = new RetrievalInspector(this);
  inspector_->hide();  // shown when a store is attached, or with Ctrl+I
  auto* side = new QWidget(this);
  auto* sideLay = new QVBoxLayout(side);
  sideLay->setContentsMargins(0, 0, 0, 0);
  sideLay->addWidget(documents_);
  sideLay->addWidget(settings_, 1);

  auto* split = new QSplitter(this);
  split->addWidget(left);
  split->addWidget(inspector_);
  split->addWidget(side);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 3);
  split->setStretchFactor(2, 1);
  auto* lay = new QVBoxLayout(this);
  lay->addWidget(split);

  connect(input_, &MessageBox::sendRequested, this, &ChatPane::send);
  connect(send_, &QPushButton::clicked, this, &ChatPane::send);
  connect(stop_, &QPushButton::clicked, this, &ChatPane::stop);
  connect(regenerate_, &QPushButton::clicked, this, &ChatPane::regenerate);
  connect(clear_, &QPushButton::clicked, column_, &ChatColumn::clear);
  connect(column_, &ChatColumn::busyChanged, this, &ChatPane::updateButtons);

  // Retrieval: the attached store searches every next turn; the inspector follows the turns.
  connect(documents_, &DocumentsBox::attached, this, [this](std::shared_ptr<kh::RagStore> store) {
    column_->setRagStore(store);
    inspector_->setStore(store);
    inspector_->show();
  });
  connect(documents_, &DocumentsBox::detached, this, [this]() { column_->setRagStore(nullptr); });
  connect(column_, &ChatColumn::entriesChanged, this, [this]() { inspector_->setTurns(column_->entries()); });
  connect(column_, &ChatColumn::retrievalArrived, this, [this](int entry) {
    inspector_->setTurns(column_->entries());
    inspector_->selectTurn(entry);
  });
  connect(column_, &ChatColumn::retrievalRequested, this, [this](int entry) {
    inspector_->show();
    inspector_->selectTurn(entry);
  });
  auto* toggle = new QShortcut(QKeySequence(Qt::CTRL | Qt::Key_I), this);
  toggle->setContext(Qt::WidgetWithChildrenShortcut);
  connect(toggle, &QShortcut::activated, this, &ChatPane::toggleInspector);
  auto* menu = new QMenu(export_);
  menu->addAction(tr("JSON…"), this, [this]() {
    const QString p = QFileDialog::getSaveFileName(this, tr("Export conversation"), "chat.json", "JSON (*.json)");
    QString err;
    if (!p.isEmpty() && !saveAs(p, &err)) QMessageBox::warning(this, tr("Export"), err);
  });
  menu->addAction(tr("Markdown…"), this, [this]() {
    const QString p = QFileDialog::getSaveFileName(this, tr("Export conversation"), "chat.md", "Markdown (*.md)");
    QString err;
    if (!p.isEmpty() && !saveAs(p, &err)) QMessageBox::warning(this, tr("Export"), err);
  });
  export_->setMenu(menu);
  updateButtons();
}

ChatPane::~ChatPane() {
  column_->stop();  // before ownWorker_ joins its thread
}

void ChatPane::setEngine(std::shared_ptr<kh::ChatEngine> engine) {
  column_->setEngine(std::move(engine));
  updateButtons();
}

void ChatPane::toggleInspector() { inspector_->setVisible(inspector_->isHidden()); }

void ChatPane::applyRagSettings() {
  kh::RagSettings rag = documents_->settings();
  rag.threshold = inspector_->threshold();  // what the researcher settled on in the inspector
  column_->setRagSettings(rag);
}

void ChatPane::send() {
  const QString text = input_->toPlainText();
  applyRagSettings();
  if (column_->ask(text, settings_->settings())) input_->clear();
}

void ChatPane::stop() { column_->stop(); }

void ChatPane::regenerate() {
  applyRagSettings();
  column_->regenerate(settings_->settings());
}

void ChatPane::updateButtons() {
  const bool busy = column_->busy(), ready = column_->engine() != nullptr;
  send_->setEnabled(ready && !busy);
  stop_->setEnabled(busy);
  regenerate_->setEnabled(ready && !busy && !column_->entries().empty());
  clear_->setEnabled(!busy);
}

QString ChatPane::exportJson() const {
  QJsonObject o = column_->toJson();
  o["settings"] = settingsJson(settings_->settings());
  return QString::fromUtf8(QJsonDocument(o).toJson(QJsonDocument::Indented));
}

QString ChatPane::exportMarkdown() const {
  QString md = "# Chat with " + (column_->engine() ? QString::fromStdString(column_->engine()->modelDir()) : tr("(no model)")) + "\n\n";
  const auto s = settings_->settings();
  if (!s.system.empty()) md += "**System:** " + QString::fromStdString(s.system) + "\n\n";
  md += QString("*temperature %1, top-p %2, top-k %3, max new tokens %4, seed %5*\n\n")
            .arg(s.temperature).arg(s.topP).arg(s.topK).arg(s.maxNewTokens).arg(s.seed);
  return md + column_->toMarkdown();
}

bool ChatPane::saveAs(const QString& path, QString* error) const {
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
    if (error) *error = path + ": " + f.errorString();
    return false;
  }
  const bool json = QFileInfo(path).suffix().compare("json", Qt::CaseInsensitive) == 0;
  f.write((json ? exportJson() : exportMarkdown()).toUtf8());
  return true;
}

}  // namespace kh::gui
