// The thread that runs chat models off the UI thread, and the one-way channel their results take
// back to the UI. A page shares one ChatWorker between its panes (one worker owns the device);
// the main window can inject its own job runner instead (RunOnWorker).
// Never blocks the UI thread except to join the worker at destruction (after cancelling its jobs).
#pragma once

#include <QObject>
#include <QThread>

#include <functional>
#include <memory>
#include <mutex>

namespace kh::gui {

// Runs a task on the worker, in submission order (FIFO), one at a time.
using RunOnWorker = std::function<void(std::function<void()>)>;

// A QThread with an event loop. runner() stays valid while the ChatWorker lives.
class ChatWorker {
 public:
  ChatWorker();
  ~ChatWorker();  // quits and joins: cancel running tasks first
  RunOnWorker runner() const;

 private:
  QThread thread_;
  QObject* context_;  // lives on thread_
};

// Posts functions from any thread to run on the UI thread in `target`'s context, until close()
// (called by the target's destructor): after that, posts are dropped. Thread-safe.
class UiChannel {
 public:
  explicit UiChannel(QObject* target) : target_(target) {}
  void post(std::function<void()> fn);
  void close();

 private:
  std::mutex m_;
  QObject* target_;
};

}  // namespace kh::gui
