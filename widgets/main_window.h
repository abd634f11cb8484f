// The workbench's main window: a sidebar of views (Models, Merge, Evolve, Runs, Chat, Train), keyboard
// shortcuts, and a status bar with the device, memory in use and the running job (progress,
// cancel). Owns the device's job runner. No torch headers here.
#pragma once

#include <QMainWindow>
#include <QStringList>

class QListWidget;
class QStackedWidget;
class QLabel;
class QProgressBar;
class QPushButton;

namespace kh {

class JobRunner;
class ModelLibrary;
class ModelsView;
class MergeView;
class EvolveView;
class RunsView;
class TrainView;

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  enum View { Models, Merge, Evolve, Runs, Chat, Train, ViewCount };
  explicit MainWindow(QWidget* parent = nullptr, bool persistLibrary = true);
  ~MainWindow() override;

  void showView(int view);
  int currentView() const;
  static QStringList viewNames();  // "models", "merge", "evolve", "runs", "chat", "train"
  QWidget* viewWidget(int view) const;

  JobRunner* runner() const { return runner_; }
  ModelsView* modelsView() const { return models_; }
  MergeView* mergeView() const { return merge_; }
  EvolveView* evolveView() const { return evolve_; }
  RunsView* runsView() const { return runs_; }
  TrainView* trainView() const { return train_; }
  QWidget* chatPage() const { return chat_; }
  // Opens a run folder in the view of its kind (Train for training runs, else Evolve).
  void openRun(const QString& dir);
  QString jobText() const;

  // Renders every view into dir/<view>.png; false when a file cannot be written.
  bool saveScreenshots(const QString& dir);

 public Q_SLOTS:
  void cancelJob();
  void runCurrent();
  void about();

 private:
  void updateMemory();
  JobRunner* runner_;
  ModelLibrary* library_;
  QListWidget* sidebar_;
  QStackedWidget* stack_;
  ModelsView* models_;
  MergeView* merge_;
  EvolveView* evolve_;
  RunsView* runs_;
  QWidget* chat_;
  TrainView* train_;
  QLabel *deviceLabel_, *memoryLabel_, *jobLabel_;
  QProgressBar* progress_;
  QPushButton* cancel_;
};

}  // namespace kh
