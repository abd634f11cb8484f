// Main window (see main_window.h).
#include "widgets/main_window.h"

#include <QAction>
#include <QApplication>
#include <QDir>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QKeySequence>
#include <QLabel>
#include <QListWidget>
#include <QMenuBar>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QShortcut>
#include <QSplitter>
#include <QStackedWidget>
#include <QStatusBar>
#include <QTimer>
#include "widgets/qcp.h"

#include "core/jobs/jobs.h"
#include "widgets/chat_page.h"
#include "widgets/evolve_dashboard.h"
#include "widgets/evolve_view.h"
#include "widgets/job_runner.h"
#include "widgets/merge_view.h"
#include "widgets/model_library.h"
#include "widgets/models_view.h"
#include "widgets/runs_view.h"
#include "widgets/train_dashboard.h"
#include "widgets/train_view.h"

namespace kh {

QStringList MainWindow::viewNames() {
  return {QStringLiteral("models"), QStringLiteral("merge"), QStringLiteral("evolve"), QStringLiteral("runs"),
          QStringLiteral("chat"), QStringLiteral("train")};
}

MainWindow::MainWindow(QWidget* parent, bool persistLibrary) : QMainWindow(parent) {
  setWindowTitle(QStringLiteral("Kumihimo"));
  runner_ = new JobRunner(QStringLiteral("cpu"), this);
  library_ = new ModelLibrary(this, persistLibrary);

  sidebar_ = new QListWidget(this);
  const QStringList titles = {QStringLiteral("Models"), QStringLiteral("Merge"), QStringLiteral("Evolve"),
                              QStringLiteral("Runs"), QStringLiteral("Chat"), QStringLiteral("Train")};
  for (int i = 0; i < titles.size(); ++i) {
    auto* item = new QListWidgetItem(QStringLiteral("%1   Ctrl+%2").arg(titles[i]).arg(i + 1), sidebar_);
    item->setToolTip(QStringLiteral("Ctrl+%1").arg(i + 1));
  }
  sidebar_->setFixedWidth(150);
  stack_ = new QStackedWidget(this);
  models_ = new ModelsView(library_, stack_);
  merge_ = new MergeView(runner_, stack_);
  evolve_ = new EvolveView(runner_, stack_);
  runs_ = new RunsView(stack_);
  // Chat answers run on the device's job runner like every other job (one thread owns the device).
  chat_ = makeChatPage(stack_, [runner = runner_](std::function<void()> task) {
    JobSpec job;
    job.name = QStringLiteral("chat answer");
    job.fn = [task = std::move(task)](ProgressReporter&, const std::atomic<bool>&) { task(); };
    runner->enqueue(std::move(job));
  });
  train_ = new TrainView(runner_, stack_);
  for (QWidget* w : {static_cast<QWidget*>(models_), static_cast<QWidget*>(merge_), static_cast<QWidget*>(evolve_),
                     static_cast<QWidget*>(runs_), chat_, static_cast<QWidget*>(train_)})
    stack_->addWidget(w);
  evolve_->setRunsRoot(runs_->model()->root());
  train_->setRunsRoot(runs_->model()->root());
  auto* central = new QWidget(this);
  auto* lay = new QHBoxLayout(central);
  lay->setContentsMargins(4, 4, 4, 4);
  lay->addWidget(sidebar_);
  lay->addWidget(stack_, 1);
  setCentralWidget(central);
  connect(sidebar_, &QListWidget::currentRowChanged, stack_, &QStackedWidget::setCurrentIndex);
  connect(runs_, &RunsView::openRequested, this, &MainWindow::openRun);
  connect(runs_, &RunsView::resumeRequested, this, [this](const QString& d) {
    if (jobs::readRunInfo(d.toStdString()).kind == "train") {
      train_->resumeRun(d);
      showView(Train);
      return;
    }
    evolve_->resumeRun(d);
    showView(Evolve);
  });
  connect(evolve_, &EvolveView::runStarted, this, [this](const QString& d) { runs_->model()->addFolder(d); });
  connect(train_, &TrainView::runStarted, this, [this](const QString& d) { runs_->model()->addFolder(d); });
  // "Chat vs base": the fine-tuned model beside its base in the Chat page's Compare tab.
  connect(train_, &TrainView::compareRequested, this, [this](const QString& tuned, const QString& base) {
    openCompare(chat_, tuned, base);
    showView(Chat);
  });

  // Menus and shortcuts.
  auto* file = menuBar()->addMenu(QStringLiteral("&File"));
  auto* addModel = file->addAction(QStringLiteral("&Add model folder..."));
  addModel->setShortcut(QKeySequence(QStringLiteral("Ctrl+O")));
  connect(addModel, &QAction::triggered, this, [this] {
    showView(Models);
    models_->addModelDialog();
  });
  auto* openRun = file->addAction(QStringLiteral("Open &run folder..."));
  connect(openRun, &QAction::triggered, this, [this] {
    const QString d = QFileDialog::getExistingDirectory(this, QStringLiteral("Open a run folder"), runs_->model()->root());
    if (!d.isEmpty()) this->openRun(d);
  });
  file->addSeparator();
  auto* quit = file->addAction(QStringLiteral("&Quit"));
  quit->setShortcut(QKeySequence::Quit);
  connect(quit, &QAction::triggered, this, &QMainWindow::close);
  auto* viewMenu = menuBar()->addMenu(QStringLiteral("&View"));
  for (int i = 0; i < titles.size(); ++i) {
    auto* a = viewMenu->addAction(titles[i]);
    a->setShortcut(QKeySequence(QStringLiteral("Ctrl+%1").arg(i + 1)));
    connect(a, &QAction::triggered, this, [this, i] { showView(i); });
  }
  auto* jobMenu = menuBar()->addMenu(QStringLiteral("&Job"));
  auto* run = jobMenu->addAction(QStringLiteral("&Run"));
  run->setShortcut(QKeySequence(QStringLiteral("Ctrl+R")));
  connect(run, &QAction::triggered, this, &MainWindow::runCurrent);
  auto* cancel = jobMenu->addAction(QStringLiteral("&Cancel"));
  cancel->setShortcuts({QKeySequence(Qt::Key_Escape), QKeySequence(QStringLiteral("Ctrl+."))});
  connect(cancel, &QAction::triggered, this, &MainWindow::cancelJob);
  auto* help = menuBar()->addMenu(QStringLiteral("&Help"));
  auto* aboutA = help->addAction(QStringLiteral("&About Kumihimo"));
  aboutA->setShortcut(QKeySequence(Qt::Key_F1));
  connect(aboutA, &QAction::triggered, this, &MainWindow::about);

  // Status bar: device, memory, the running job.
  deviceLabel_ = new QLabel(QStringLiteral("Device: %1").arg(runner_->device()), this);
  memoryLabel_ = new QLabel(this);
  jobLabel_ = new QLabel(QStringLiteral("idle"), this);
  progress_ = new QProgressBar(this);
  progress_->setMaximumWidth(200);
  progress_->setRange(0, 1000);
  progress_->setTextVisible(false);
  progress_->setVisible(false);
  cancel_ = new QPushButton(QStringLiteral("Cancel"), this);
  cancel_->setEnabled(false);
  statusBar()->addWidget(deviceLabel_);
  statusBar()->addWidget(memoryLabel_);
  statusBar()->addWidget(jobLabel_, 1);
  statusBar()->addPermanentWidget(progress_);
  statusBar()->addPermanentWidget(cancel_);
  connect(cancel_, &QPushButton::clicked, this, &MainWindow::cancelJob);
  auto* memTimer = new QTimer(this);
  memTimer->setInterval(1000);
  connect(memTimer, &QTimer::timeout, this, &MainWindow::updateMemory);
  memTimer->start();
  updateMemory();

  connect(runner_, &JobRunner::jobStarted, this, [this](int, const QString& name) {
    jobLabel_->setText(name);
    progress_->setVisible(true);
    progress_->setRange(0, 0);
    cancel_->setEnabled(true);
  });
  connect(runner_, &JobRunner::jobProgress, this, [this](int, double f, const QString& text) {
    if (f >= 0) {
      progress_->setRange(0, 1000);
      progress_->setValue(static_cast<int>(f * 1000));
    }
    jobLabel_->setText(runner_->currentName() + QStringLiteral(": ") + text);
  });
  connect(runner_, &JobRunner::jobFinished, this, [this](int, bool ok, const QString& message) {
    progress_->setVisible(false);
    cancel_->setEnabled(runner_->busy());
    jobLabel_->setText(ok ? QStringLiteral("finished") : QStringLiteral("stopped: ") + message);
    jobLabel_->setStyleSheet(ok || message == QStringLiteral("cancelled") ? QString() : QStringLiteral("color: #a02020;"));
    if (!ok && message != QStringLiteral("cancelled")) statusBar()->showMessage(message, 15000);
    evolve_->dashboard()->poll();
    train_->dashboard()->poll();
    runs_->model()->refresh();
  });

  showView(Models);
  resize(1200, 760);
}

MainWindow::~MainWindow() {
  delete chat_;    // cancels its running answer, so the runner's current task ends soon
  chat_ = nullptr;
  delete runner_;  // joins the worker before the views it reports to go away
  runner_ = nullptr;
}

void MainWindow::showView(int view) {
  if (view < 0 || view >= ViewCount) return;
  sidebar_->setCurrentRow(view);
  stack_->setCurrentIndex(view);
}

int MainWindow::currentView() const { return stack_->currentIndex(); }

QWidget* MainWindow::viewWidget(int view) const { return stack_->widget(view); }

QString MainWindow::jobText() const { return jobLabel_->text(); }

void MainWindow::openRun(const QString& dir) {
  runs_->model()->addFolder(dir);
  if (jobs::readRunInfo(dir.toStdString()).kind == "train") {
    train_->openRunFolder(dir);
    showView(Train);
  } else {
    evolve_->openRunFolder(dir);
    showView(Evolve);
  }
}

void MainWindow::cancelJob() {
  if (runner_->busy()) {
    // A chat answer watches the chat's own stop flag, not the runner's.
    if (runner_->currentName() == QStringLiteral("chat answer")) stopChatAnswers(chat_);
    runner_->cancelCurrent();
    jobLabel_->setText(QStringLiteral("cancelling..."));
  }
}

void MainWindow::runCurrent() {
  if (currentView() == Evolve) evolve_->runClicked();
  else if (currentView() == Train) train_->startClicked();
  else if (currentView() == Merge) merge_->run();
}

void MainWindow::about() {
  QMessageBox::about(this, QStringLiteral("About Kumihimo"),
                     QStringLiteral("<b>Kumihimo %1</b><p>A research workbench for LLMs: merge, evolve, evaluate, fine-tune, chat.</p>"
                                    "<p>Ctrl+1..6 views, Ctrl+O add model, Ctrl+R run, Esc or Ctrl+. cancel.</p>")
                         .arg(QApplication::applicationVersion()));
}

void MainWindow::updateMemory() {
  static const bool gpu = jobs::availableDevices().size() > 1;
  const std::string device = gpu ? jobs::deviceMemoryText() : std::string();
  QString gpuText = QStringLiteral("  GPU: none (CPU build)");
  if (gpu) gpuText = device.empty() ? QString() : QStringLiteral("  GPU: ") + QString::fromStdString(device);
  memoryLabel_->setText(QStringLiteral("Memory: %1%2")
                            .arg(QString::fromStdString(jobs::formatBytes(jobs::processMemory())), gpuText));
}

bool MainWindow::saveScreenshots(const QString& dir) {
  QDir().mkpath(dir);
  const int keep = currentView();
  if (!isVisible()) {
    setAttribute(Qt::WA_DontShowOnScreen, false);
    show();
  }
  bool ok = true;
  const auto names = viewNames();
  for (int v = 0; v < ViewCount; ++v) {
    showView(v);
    QApplication::processEvents();
    evolve_->dashboard()->plot()->replot();
    train_->dashboard()->replotAll();
    ok = grab().save(QDir(dir).filePath(names[v] + QStringLiteral(".png"))) && ok;
  }
  showView(keep);
  return ok;
}

}  // namespace kh
