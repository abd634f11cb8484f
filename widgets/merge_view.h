// Merge view: a mergekit YAML recipe editor with the memory plan and Run (a job on the worker);
// a bad recipe's error is shown at its line. No torch headers here.
#pragma once

#include <QWidget>

class QPlainTextEdit;
class QLineEdit;
class QLabel;
class QComboBox;

namespace kh {

class JobRunner;

class MergeView : public QWidget {
  Q_OBJECT
 public:
  MergeView(JobRunner* runner, QWidget* parent = nullptr);
  QPlainTextEdit* editor() const { return editor_; }
  QString planText() const;
  int errorLine() const { return errorLine_; }
  void setBaseDir(const QString& dir);  // model paths are relative to it
  void setOutDir(const QString& dir);

 public Q_SLOTS:
  bool plan();  // false when the recipe has an error (shown at its line)
  void run();
  void loadDialog();

 private:
  void showError(const QString& message, int line);
  JobRunner* runner_;
  QPlainTextEdit* editor_;
  QPlainTextEdit* plan_;
  QLineEdit *baseDir_, *outDir_;
  QComboBox* device_;
  QLabel* message_;
  int errorLine_ = 0;
};

}  // namespace kh
