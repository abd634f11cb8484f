// ChatWorker and UiChannel (see chat_worker.h).
#include "widgets/chat/chat_worker.h"

#include <QMetaObject>

#include "widgets/chat/torch_free.h"

namespace kh::gui {

ChatWorker::ChatWorker() : context_(new QObject) {
  thread_.setObjectName("kumihimo-chat-worker");
  context_->moveToThread(&thread_);
  QObject::connect(&thread_, &QThread::finished, context_, &QObject::deleteLater);
  thread_.start();
}

ChatWorker::~ChatWorker() {
  thread_.quit();
  thread_.wait();
}

RunOnWorker ChatWorker::runner() const {
  QObject* ctx = context_;
  return [ctx](std::function<void()> task) {
    QMetaObject::invokeMethod(ctx, std::move(task), Qt::QueuedConnection);
  };
}

void UiChannel::post(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(m_);
  // Under the lock: the target cannot finish close() (its destructor) between the check and the
  // post, and Qt drops events posted to an object when it is deleted.
  if (target_) QMetaObject::invokeMethod(target_, std::move(fn), Qt::QueuedConnection);
}

void UiChannel::close() {
  std::lock_guard<std::mutex> lock(m_);
  target_ = nullptr;
}

}  // namespace kh::gui
