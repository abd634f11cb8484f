// Train view: a form for TRAIN.yaml (load / save round trip), the label audit drawn token by token
// (trained vs masked, the stop share in big text, lengths, the train-vs-chat rendering check) and the
// training memory plan, made without training anything, Start / Stop / Resume as jobs on the device's worker, a progress bar,
// the live training dashboard of the run folder, and "Chat vs base" for a finished run.
// No torch headers here: it drives the engine through core/jobs/train_jobs.h.
#pragma once

#include <QString>
#include <QWidget>

#include "core/jobs/train_jobs.h"
#include "widgets/job_runner.h"

class QCheckBox;
class QComboBox;
class QCustomPlot;
class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTabWidget;
class QTextBrowser;

namespace kh {

class TrainDashboard;

class TrainView : public QWidget {
  Q_OBJECT
 public:
  TrainView(JobRunner* runner, QWidget* parent = nullptr);

  jobs::TrainForm form() const;
  void setForm(const jobs::TrainForm& f);
  bool loadConfig(const QString& path);  // false + message() on error
  bool saveConfig(const QString& path);
  QString configPath() const { return configPath_; }
  QString message() const;
  bool messageIsError() const { return messageError_; }
  void setRunsRoot(const QString& root) { runsRoot_ = root; }
  QString runsRoot() const { return runsRoot_; }
  TrainDashboard* dashboard() const { return dashboard_; }
  QString logText() const;

  // Saves the form (when it changed the file) and audits its labels; false + message() when the
  // config or the data is bad. The audit tab shows the result.
  bool audit();
  bool auditing() const { return auditing_; }  // an audit is running (its thread) right now
  bool hasAudit() const { return hasAudit_; }
  const jobs::TrainAudit& lastAudit() const { return audit_; }
  QString stopShareText() const;   // the big text ("100.0% of answers end on a trained stop token")
  bool stopShareIsRed() const;
  QString auditHtml() const;       // the token-coloured examples
  QString memoryPlanText() const;  // the training memory plan shown beside the audit (rich text)
  // Validates, audits (refusing a failing audit unless allow_unterminated) and queues the run;
  // returns its folder ("" and message() when refused). runDir "" = a new folder under the runs root.
  QString startRun(const QString& runDir = {});
  void resumeRun(const QString& runDir);
  void openRunFolder(const QString& dir);
  void stop();
  bool running() const { return jobId_ != 0; }
  QString progressText() const;
  int progressValue() const;  // 0..1000
  bool chatVsBaseEnabled() const;
  bool resumeEnabled() const;

 public Q_SLOTS:
  void loadDialog();
  void saveDialog();
  void startClicked();
  void openRunFolderDialog();
  // Asks for the fine-tuned model of the followed run next to its base (merging the adapter first
  // as a job when the run wrote no merged/ folder).
  void chatVsBase();

 Q_SIGNALS:
  void runStarted(const QString& runDir);
  void compareRequested(const QString& fineTuned, const QString& base);

 private:
  void setMessage(const QString& m, bool error);
  void showAudit(const jobs::TrainAudit& a);
  void updateButtons();
  bool saveIfChanged();
  int enqueue(const QString& name, const QString& runDir, JobFn fn);

  JobRunner* runner_;
  bool auditing_ = false;
  QString configPath_, runsRoot_ = QStringLiteral("runs");
  jobs::TrainForm hidden_;  // fields the form does not show (unknown keys) survive a round trip
  int jobId_ = 0;
  QString jobName_;
  bool messageError_ = false, hasAudit_ = false;
  jobs::TrainAudit audit_;
  QString pendingCompare_;  // run folder whose adapter is being merged for Chat vs base

  QLineEdit *model_, *data_, *evalData_, *evalSplit_, *template_, *targets_, *alpha_, *dropout_, *lr_, *weightDecay_,
      *clipNorm_, *seed_;
  QComboBox *method_, *schedule_, *labels_, *dtype_, *device_, *mergedDtype_;
  QSpinBox *rank_, *warmup_, *steps_, *epochs_, *batch_, *accum_, *maxLength_, *evalEvery_, *evalPrompts_, *evalMaxNew_,
      *saveEvery_;
  QCheckBox *rsLora_, *maskEot_, *allowUnterminated_, *exportMerged_, *gradCheckpointing_;
  QPushButton *auditButton_, *startButton_, *stopButton_, *resumeButton_, *compareButton_;
  QLabel *message_, *progressLabel_;
  QProgressBar* progress_;
  QPlainTextEdit* log_;
  QTabWidget* tabs_;
  TrainDashboard* dashboard_;
  QLabel *share_, *auditStats_, *chatDiff_, *memoryPlan_;
  QCustomPlot* lengths_;
  QTextBrowser* examples_;
};

}  // namespace kh
