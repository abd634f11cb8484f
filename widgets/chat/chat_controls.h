// Controls the chat and compare panes share: the sampling settings form (system prompt,
// temperature, top-p, top-k, min-p, repetition penalty, max new tokens, seed), the message box
// (Enter sends, Shift+Enter adds a line) and a model picker that loads a ChatEngine on the worker.
// Never loads a model on the UI thread.
#pragma once

#include <QPlainTextEdit>
#include <QWidget>

#include <memory>

#include "core/jobs/chat_engine.h"
#include "widgets/chat/chat_worker.h"

class QDoubleSpinBox;
class QSpinBox;
class QLineEdit;
class QComboBox;
class QLabel;
class QPushButton;
class QVBoxLayout;

namespace kh::gui {

// The message box with Send / Stop beside it, then Regenerate, Clear and (when given) Export
// below: the input area both panes put under their transcript.
void addInputArea(QVBoxLayout* into, QWidget* input, QPushButton* send, QPushButton* stop, QPushButton* regenerate,
                  QPushButton* clear, QPushButton* exportButton = nullptr);

class SamplingSettingsBox : public QWidget {
  Q_OBJECT
 public:
  explicit SamplingSettingsBox(QWidget* parent = nullptr);
  kh::ChatSettings settings() const;
  void setSettings(const kh::ChatSettings& s);

 private:
  QPlainTextEdit* system_;
  QDoubleSpinBox *temperature_, *topP_, *minP_, *repetition_;
  QSpinBox *topK_, *maxNew_, *seed_;
  QLineEdit* template_;
};

class MessageBox : public QPlainTextEdit {
  Q_OBJECT
 public:
  explicit MessageBox(QWidget* parent = nullptr);
 Q_SIGNALS:
  void sendRequested();

 protected:
  void keyPressEvent(QKeyEvent* e) override;
};

class ModelPicker : public QWidget {
  Q_OBJECT
 public:
  ModelPicker(const QString& label, RunOnWorker runOnWorker, QWidget* parent = nullptr);
  ~ModelPicker() override;
  void setModelDir(const QString& dir);
  QString modelDir() const;
  QString device() const;
  void load();  // on the worker; engineLoaded or loadFailed follows on the UI thread

 Q_SIGNALS:
  void engineLoaded(std::shared_ptr<kh::ChatEngine> engine);
  void loadFailed(const QString& message);

 private:
  RunOnWorker run_;
  std::shared_ptr<UiChannel> channel_;
  QLineEdit* dir_;
  QComboBox* device_;
  QPushButton* load_;
  QLabel* status_;
};

}  // namespace kh::gui
