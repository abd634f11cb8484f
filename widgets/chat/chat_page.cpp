// makeChatPage (see widgets/chat_page.h): one ChatWorker shared by the picker and both panes, so
// loading and answering run one at a time on the thread that owns the device.
#include "widgets/chat_page.h"

#include <QLabel>
#include <QTabWidget>
#include <QVBoxLayout>
#include <QWidget>

#include "widgets/chat/chat_controls.h"
#include "widgets/chat/chat_pane.h"
#include "widgets/chat/chat_worker.h"
#include "widgets/chat/compare_pane.h"
#include "widgets/chat/torch_free.h"

namespace kh::gui {
namespace {

class ChatPage : public QWidget {
 public:
  ChatPage(QWidget* parent, RunOnWorker injected)
      : QWidget(parent), worker_(injected ? nullptr : std::make_unique<ChatWorker>()) {
    setObjectName("chat_page");
    const RunOnWorker run = injected ? injected : worker_->runner();
    auto* pickerA = new ModelPicker(tr("Model"), run, this);
    pickerA->setObjectName("model_picker");
    chat_ = new ChatPane(this, run);
    compare_ = new ComparePane(this, run);
    auto* compareTab = new QWidget(this);
    auto* compareLay = new QVBoxLayout(compareTab);
    auto* pickerB = new ModelPicker(tr("Model B"), run, compareTab);
    pickerB->setObjectName("model_picker_b");
    compareLay->addWidget(new QLabel(tr("Model A is the model picked above; pick model B here."), compareTab));
    compareLay->addWidget(pickerB);
    compareLay->addWidget(compare_, 1);
    auto* tabs = new QTabWidget(this);
    tabs->addTab(chat_, tr("Chat"));
    tabs->addTab(compareTab, tr("Compare"));
    auto* error = new QLabel(this);
    error->setStyleSheet("color: #b00020");
    error->setWordWrap(true);
    error->setTextInteractionFlags(Qt::TextSelectableByMouse);
    auto* lay = new QVBoxLayout(this);
    lay->addWidget(pickerA);
    lay->addWidget(error);
    lay->addWidget(tabs, 1);
    connect(pickerA, &ModelPicker::engineLoaded, this, [this, error](std::shared_ptr<kh::ChatEngine> e) {
      error->clear();
      chat_->setEngine(e);
      compare_->setEngine(0, e);
    });
    connect(pickerB, &ModelPicker::engineLoaded, this, [this, error](std::shared_ptr<kh::ChatEngine> e) {
      error->clear();
      compare_->setEngine(1, e);
    });
    connect(pickerA, &ModelPicker::loadFailed, error, &QLabel::setText);
    connect(pickerB, &ModelPicker::loadFailed, error, &QLabel::setText);
  }
  void stopAnswers() {
    chat_->stop();
    compare_->stop();
  }
  ~ChatPage() override {
    stopAnswers();
    // worker_ (when the page has its own) joins after the running answer sees its cancel flag
  }

 private:
  std::unique_ptr<ChatWorker> worker_;
  ChatPane* chat_;
  ComparePane* compare_;
};

}  // namespace
}  // namespace kh::gui

namespace kh {
QWidget* makeChatPage(QWidget* parent, std::function<void(std::function<void()>)> runOnWorker) {
  return new kh::gui::ChatPage(parent, std::move(runOnWorker));
}
// Found by the pickers' object names, so the page's constructor needs no hook for it.
void openCompare(QWidget* chatPage, const QString& modelA, const QString& modelB) {
  auto* page = dynamic_cast<kh::gui::ChatPage*>(chatPage);
  if (!page) return;
  auto* a = page->findChild<kh::gui::ModelPicker*>(QStringLiteral("model_picker"));
  auto* b = page->findChild<kh::gui::ModelPicker*>(QStringLiteral("model_picker_b"));
  auto* tabs = page->findChild<QTabWidget*>();
  if (!a || !b || !tabs) return;
  a->setModelDir(modelA);
  b->setModelDir(modelB);
  tabs->setCurrentIndex(tabs->count() - 1);  // Compare
  a->load();
  b->load();
}
void stopChatAnswers(QWidget* chatPage) {
  if (auto* page = dynamic_cast<kh::gui::ChatPage*>(chatPage)) page->stopAnswers();
}
}  // namespace kh
