// Evolve view: a form for EVOLVE.yaml (load / save round trip), Run (a job on the device's worker),
// and the live dashboard that follows the run folder. No torch headers here.
#pragma once

#include <QString>
#include <QWidget>

#include "core/jobs/jobs.h"

class QComboBox;
class QLineEdit;
class QPlainTextEdit;
class QSpinBox;
class QLabel;

namespace kh {

class EvolveDashboard;
class JobRunner;

class EvolveView : public QWidget {
  Q_OBJECT
 public:
  EvolveView(JobRunner* runner, QWidget* parent = nullptr);

  jobs::EvolveForm form() const;
  void setForm(const jobs::EvolveForm& f);
  bool loadConfig(const QString& path);  // false + message() on error
  bool saveConfig(const QString& path);
  QString configPath() const { return configPath_; }
  QString message() const;
  void setRunsRoot(const QString& root) { runsRoot_ = root; }
  QString runsRoot() const { return runsRoot_; }
  EvolveDashboard* dashboard() const { return dashboard_; }
  QString logText() const;  // the jobs' log lines (memory plan, generation summaries, errors)

  // Saves the form to the config file, validates it and queues the run; returns the run folder
  // ("" and message() when refused). runDir "" = a new folder under the runs root.
  QString startRun(const QString& runDir = {});
  // Queues a resume of a stopped run and follows it.
  void resumeRun(const QString& runDir);
  void openRunFolder(const QString& dir);

 public Q_SLOTS:
  void loadDialog();
  void saveDialog();
  void runClicked();
  void openRunFolderDialog();

 Q_SIGNALS:
  void runStarted(const QString& runDir);

 private:
  void setMessage(const QString& m, bool error);
  JobRunner* runner_;
  QString configPath_, runsRoot_ = QStringLiteral("runs");
  jobs::EvolveForm hidden_;  // fields the form does not show survive a round trip
  QComboBox *method_, *device_, *dtype_, *fitnessKind_;
  QLineEdit *baseModel_, *fitnessPath_;
  QPlainTextEdit* models_;
  QSpinBox *granularity_, *generations_, *seed_, *sequences_, *length_;
  QLabel* message_;
  QPlainTextEdit* log_;
  EvolveDashboard* dashboard_;
};

}  // namespace kh
