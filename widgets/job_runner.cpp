// The worker thread and its queue (see job_runner.h).
#include "widgets/job_runner.h"

#include <QMetaObject>
#include <chrono>

#include "core/jobs/jobs.h"

namespace kh {

namespace {

// Emits progress at most every 50 ms (the last value always gets through at the end).
class ThrottledReporter : public ProgressReporter {
 public:
  ThrottledReporter(JobRunner* r, int id) : runner_(r), id_(id) {}
  void progress(double fraction, const std::string& text) override {
    const auto now = std::chrono::steady_clock::now();
    pendingFraction_ = fraction;
    pendingText_ = text;
    pending_ = true;
    if (now - last_ < std::chrono::milliseconds(50)) return;
    flush(now);
  }
  void log(const std::string& line) override {
    QMetaObject::invokeMethod(runner_, "jobLog", Qt::QueuedConnection, Q_ARG(int, id_),
                              Q_ARG(QString, QString::fromStdString(line)));
  }
  void flush(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) {
    if (!pending_) return;
    pending_ = false;
    last_ = now;
    QMetaObject::invokeMethod(runner_, "jobProgress", Qt::QueuedConnection, Q_ARG(int, id_),
                              Q_ARG(double, pendingFraction_), Q_ARG(QString, QString::fromStdString(pendingText_)));
  }

 private:
  JobRunner* runner_;
  int id_;
  std::chrono::steady_clock::time_point last_{};
  double pendingFraction_ = -1;
  std::string pendingText_;
  bool pending_ = false;
};

}  // namespace

class JobRunner::Worker : public QThread {
 public:
  explicit Worker(JobRunner* r) : r_(r) {}
  void run() override { r_->loop(); }

 private:
  JobRunner* r_;
};

JobRunner::JobRunner(const QString& device, QObject* parent) : QObject(parent), device_(device) {
  thread_ = new Worker(this);
  thread_->setObjectName(QStringLiteral("kh-worker-") + device);
  thread_->start();
}

JobRunner::~JobRunner() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cancel_ = true;
  cv_.notify_all();
  thread_->wait();
  delete thread_;
}

int JobRunner::enqueue(JobSpec job) {
  std::lock_guard<std::mutex> lock(mu_);
  const int id = nextId_++;
  queue_.push_back({id, std::move(job)});
  cv_.notify_one();
  return id;
}

bool JobRunner::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return currentId_ != 0 || !queue_.empty();
}

QString JobRunner::currentName() const {
  std::lock_guard<std::mutex> lock(mu_);
  return currentName_;
}

// Cancels the running job; with none running yet, drops the next queued one (so that a cancel
// pressed just after Run is never lost to the worker resetting the flag).
void JobRunner::cancelCurrent() {
  std::lock_guard<std::mutex> lock(mu_);
  if (currentId_ != 0) {
    cancel_ = true;
  } else if (!queue_.empty()) {
    const int id = queue_.front().id;
    queue_.pop_front();
    QMetaObject::invokeMethod(this, "jobFinished", Qt::QueuedConnection, Q_ARG(int, id), Q_ARG(bool, false),
                              Q_ARG(QString, QStringLiteral("cancelled")));
  }
}

void JobRunner::loop() {
  for (;;) {
    Queued job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      currentId_ = job.id;
      currentName_ = job.spec.name;
      cancel_ = false;
    }
    QMetaObject::invokeMethod(this, "jobStarted", Qt::QueuedConnection, Q_ARG(int, job.id), Q_ARG(QString, job.spec.name));
    ThrottledReporter reporter(this, job.id);
    bool ok = true;
    QString message;
    try {
      job.spec.fn(reporter, cancel_);
    } catch (...) {
      ok = false;
      const std::string m = jobs::jobMessage(std::current_exception());
      message = QString::fromStdString(m);
      if (!job.spec.runDir.isEmpty() && m != "cancelled") jobs::writeRunError(job.spec.runDir.toStdString(), m);
    }
    reporter.flush();
    {
      std::lock_guard<std::mutex> lock(mu_);
      currentId_ = 0;
      currentName_.clear();
    }
    QMetaObject::invokeMethod(this, "jobFinished", Qt::QueuedConnection, Q_ARG(int, job.id), Q_ARG(bool, ok),
                              Q_ARG(QString, message));
  }
}

}  // namespace kh
