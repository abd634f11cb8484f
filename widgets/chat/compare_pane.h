// Side by side: two models answer the same conversation with the same settings and seed, each
// column streaming with its own stats; one shared message box. Each column keeps its own model's
// answers as that model's history. Both answers run on the one worker, A then B (one device).
#pragma once

#include <QWidget>

#include <memory>

#include "core/jobs/chat_engine.h"
#include "widgets/chat/chat_column.h"
#include "widgets/chat/chat_controls.h"
#include "widgets/chat/chat_worker.h"

class QPushButton;

namespace kh::gui {

class ComparePane : public QWidget {
  Q_OBJECT
 public:
  explicit ComparePane(QWidget* parent = nullptr, RunOnWorker runOnWorker = {});
  ~ComparePane() override;

  void setEngines(std::shared_ptr<kh::ChatEngine> a, std::shared_ptr<kh::ChatEngine> b);
  void setEngine(int column, std::shared_ptr<kh::ChatEngine> engine);
  ChatColumn* column(int i) const { return i == 0 ? a_ : b_; }
  SamplingSettingsBox* settingsBox() const { return settings_; }
  MessageBox* input() const { return input_; }
  bool busy() const { return a_->busy() || b_->busy(); }

  void send();
  void stop();
  void regenerate();
  QString exportJson() const;  // {"settings", "columns": [column A, column B]}

 Q_SIGNALS:
  void bothFinished();  // both columns' answers are done (finished, cancelled or failed)

 private:
  void updateButtons();
  void columnDone();
  std::unique_ptr<ChatWorker> ownWorker_;
  ChatColumn *a_, *b_;
  SamplingSettingsBox* settings_;
  MessageBox* input_;
  QPushButton *send_, *stop_, *regenerate_, *clear_;
  int running_ = 0;
};

}  // namespace kh::gui
