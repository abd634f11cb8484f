// The chat view: one model's transcript with streaming answers, a message box, Stop, Regenerate,
// Clear, the sampling settings and export of the conversation (JSON, Markdown); a Documents box to
// attach a retrieval store and the retrieval inspector beside the transcript (Ctrl+I toggles it).
// Never runs the model on the UI thread: answers run through RunOnWorker (default: its own
// ChatWorker thread; the main window can pass its job runner).
#pragma once

#include <QString>
#include <QWidget>

#include <memory>

#include "core/jobs/chat_engine.h"
#include "widgets/chat/chat_column.h"
#include "widgets/chat/chat_controls.h"
#include "widgets/chat/chat_worker.h"

class QPushButton;
class QSplitter;

namespace kh::gui {

class DocumentsBox;
class RetrievalInspector;

class ChatPane : public QWidget {
  Q_OBJECT
 public:
  explicit ChatPane(QWidget* parent = nullptr, RunOnWorker runOnWorker = {});
  ~ChatPane() override;

  void setEngine(std::shared_ptr<kh::ChatEngine> engine);
  ChatColumn* column() const { return column_; }
  SamplingSettingsBox* settingsBox() const { return settings_; }
  MessageBox* input() const { return input_; }
  DocumentsBox* documentsBox() const { return documents_; }
  RetrievalInspector* inspector() const { return inspector_; }
  void toggleInspector();

  void send();        // the message box's text as the next user turn
  void stop();
  void regenerate();
  QString exportJson() const;      // {"model", "settings", "messages"} (indented)
  QString exportMarkdown() const;
  bool saveAs(const QString& path, QString* error = nullptr) const;  // .json or Markdown by suffix

 private:
  void updateButtons();
  void applyRagSettings();  // the Documents box's k and template, the inspector's threshold
  std::unique_ptr<ChatWorker> ownWorker_;  // only when no runner was injected
  ChatColumn* column_;
  SamplingSettingsBox* settings_;
  MessageBox* input_;
  DocumentsBox* documents_;
  RetrievalInspector* inspector_;
  QPushButton *send_, *stop_, *regenerate_, *clear_, *export_;
};

// The settings as they go into an export file.
QJsonObject settingsJson(const kh::ChatSettings& s);

}  // namespace kh::gui
