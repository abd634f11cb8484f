// Runs jobs off the UI thread: one worker thread per device, a FIFO queue, cooperative cancel.
// Progress crosses to the UI thread as queued signals throttled to ~20 Hz; exceptions stop at the
// job boundary and become a failed job's message (and <runDir>/error.txt). No torch headers here.
#pragma once

#include <QObject>
#include <QString>
#include <QThread>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace kh {

// What a running job reports through; safe to call as often as it likes (throttled).
class ProgressReporter {
 public:
  virtual ~ProgressReporter() = default;
  virtual void progress(double fraction, const std::string& text) = 0;  // fraction < 0: unknown
  virtual void log(const std::string& line) = 0;
};

using JobFn = std::function<void(ProgressReporter&, const std::atomic<bool>& cancel)>;

struct JobSpec {
  QString name;
  QString runDir;  // where error.txt goes when it fails ("" = none)
  JobFn fn;
};

class JobRunner : public QObject {
  Q_OBJECT
 public:
  explicit JobRunner(const QString& device = QStringLiteral("cpu"), QObject* parent = nullptr);
  ~JobRunner() override;  // cancels the running job, drops the queue, joins the thread

  int enqueue(JobSpec job);  // returns the job id
  bool busy() const;
  QString device() const { return device_; }
  QString currentName() const;

 public Q_SLOTS:
  void cancelCurrent();  // the running job, else the next queued one

 Q_SIGNALS:
  void jobStarted(int id, const QString& name);
  void jobProgress(int id, double fraction, const QString& text);
  void jobLog(int id, const QString& line);
  // ok = finished normally; message = "" or the error ("cancelled" when cancelled).
  void jobFinished(int id, bool ok, const QString& message);

 private:
  class Worker;
  friend class Worker;
  struct Queued {
    int id;
    JobSpec spec;
  };
  void loop();

  QString device_;
  QThread* thread_ = nullptr;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  bool stopping_ = false;
  int nextId_ = 1;
  int currentId_ = 0;
  QString currentName_;
  std::atomic<bool> cancel_{false};
};

}  // namespace kh
