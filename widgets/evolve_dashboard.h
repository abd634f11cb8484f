// The live evolution dashboard: follows a run folder's metrics.jsonl (QFileSystemWatcher plus a poll
// timer, because watchers miss appends on some file systems and over NFS), plots every candidate's
// fitness against its evaluation index, best / mean / held-out of the best per generation, and a
// heat map of the current best's parameters (layer group x model). Hover or click a point for its
// decoded recipe. Works on a folder another process (a CLI run) is still writing. No torch here.
#pragma once

#include <QString>
#include <QWidget>
#include <nlohmann/json.hpp>
#include <vector>

class QCustomPlot;
class QCPColorMap;
class QCPColorScale;
class QFileSystemWatcher;
class QLabel;
class QPlainTextEdit;
class QTimer;
class QMouseEvent;

namespace kh {

class EvolveDashboard : public QWidget {
  Q_OBJECT
 public:
  explicit EvolveDashboard(QWidget* parent = nullptr);

  // Follows `dir` from the start of its metrics.jsonl ("" stops following).
  void follow(const QString& dir);
  QString folder() const { return dir_; }
  // Reads what is new now (the watcher and the timer call this too).
  void poll();

  int candidateCount() const { return static_cast<int>(candidates_.size()); }
  int generationCount() const { return static_cast<int>(generations_.size()); }
  int plottedPoints() const;  // points in the candidate scatter graph
  QString lastError() const { return lastError_; }
  QCustomPlot* plot() const { return plot_; }
  QCustomPlot* heatMap() const { return heat_; }
  // The decoded recipe of candidate i (JSON text), shown on hover/click.
  QString candidateText(int i) const;
  void showCandidate(int i);
  QString panelText() const;  // what the side panel shows now

  bool exportPng(const QString& path);
  bool exportPdf(const QString& path);
  bool exportCsv(const QString& path) const;

 Q_SIGNALS:
  void updated();

 public Q_SLOTS:
  void exportDialog();

 private:
  struct Candidate {
    int generation = 0, index = 0;
    double x = 0;  // evaluation index
    bool hasFitness = false;
    double fitness = 0;
    nlohmann::json decoded, genome;
  };
  struct Generation {
    int generation = 0;
    double x = 0;
    bool hasBest = false, hasHeldout = false;
    double best = 0, mean = 0, heldout = 0;
  };
  void clear();
  void add(const nlohmann::json& line);
  void rebuild();
  void updateHeatMap();
  void onHover(QMouseEvent* e, bool click);

  QString dir_;
  uint64_t offset_ = 0;
  std::vector<Candidate> candidates_;
  std::vector<Generation> generations_;
  int bestCandidate_ = -1;
  QString lastError_;
  QCustomPlot* plot_;
  QCustomPlot* heat_;
  QCPColorMap* map_;
  QCPColorScale* scale_;
  QPlainTextEdit* panel_;
  QLabel* title_;
  QFileSystemWatcher* watcher_;
  QTimer* timer_;
};

}  // namespace kh
