// The live training dashboard: follows a training run folder's metrics.jsonl (watcher plus a poll
// timer, as the evolution dashboard does, so a run a CLI process is still writing plots too) and
// plots train and eval loss, the learning rate, and the held-out stop-rate with the mean generated
// and reference answer lengths, all against the optimizer step. No torch here.
#pragma once

#include <QString>
#include <QWidget>
#include <nlohmann/json.hpp>

class QCustomPlot;
class QFileSystemWatcher;
class QLabel;
class QTimer;

namespace kh {

class TrainDashboard : public QWidget {
  Q_OBJECT
 public:
  explicit TrainDashboard(QWidget* parent = nullptr);

  // Follows `dir` from the start of its metrics.jsonl ("" stops following).
  void follow(const QString& dir);
  QString folder() const { return dir_; }
  void poll();

  int trainPoints() const;  // points on the train-loss curve
  int evalPoints() const;   // points on the eval-loss curve
  int lrPoints() const;
  int stopRatePoints() const;
  int64_t lastStep() const { return lastStep_; }
  double lastLoss() const { return lastLoss_; }
  double lastTokensPerSecond() const { return lastTps_; }
  bool hasEval() const { return hasEval_; }
  double lastStopRate() const { return lastStopRate_; }
  QString lastError() const { return lastError_; }
  QCustomPlot* lossPlot() const { return loss_; }
  QCustomPlot* lrPlot() const { return lr_; }
  QCustomPlot* stopPlot() const { return stop_; }
  void replotAll();
  bool exportPng(const QString& path);  // the three plots stacked

 Q_SIGNALS:
  void updated();

 private:
  void clear();
  void add(const nlohmann::json& line);
  void rescale();

  QString dir_;
  uint64_t offset_ = 0;
  int64_t lastStep_ = 0;
  double lastLoss_ = 0, lastTps_ = 0, lastStopRate_ = 0;
  bool hasEval_ = false;
  QString lastError_;
  QLabel* title_;
  QCustomPlot *loss_, *lr_, *stop_;
  QFileSystemWatcher* watcher_;
  QTimer* timer_;
};

}  // namespace kh
