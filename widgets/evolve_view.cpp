// Evolve view (see evolve_view.h).
#include "widgets/evolve_view.h"

#include <QComboBox>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QVBoxLayout>

#include "widgets/evolve_dashboard.h"
#include "widgets/job_runner.h"

namespace kh {

EvolveView::EvolveView(JobRunner* runner, QWidget* parent) : QWidget(parent), runner_(runner) {
  auto* formBox = new QWidget(this);
  auto* fl = new QFormLayout(formBox);
  models_ = new QPlainTextEdit(formBox);
  models_->setPlaceholderText(QStringLiteral("one model folder per line (relative to EVOLVE.yaml)"));
  models_->setMaximumHeight(80);
  fl->addRow(QStringLiteral("Models"), models_);
  baseModel_ = new QLineEdit(formBox);
  baseModel_->setPlaceholderText(QStringLiteral("base model (task-vector methods, slerp)"));
  fl->addRow(QStringLiteral("Base model"), baseModel_);
  method_ = new QComboBox(formBox);
  method_->addItems({QStringLiteral("linear"), QStringLiteral("task_arithmetic"), QStringLiteral("ties"),
                     QStringLiteral("dare_ties"), QStringLiteral("dare_linear"), QStringLiteral("slerp")});
  fl->addRow(QStringLiteral("Method"), method_);
  granularity_ = new QSpinBox(formBox);
  granularity_->setRange(1, 512);
  fl->addRow(QStringLiteral("Layers per group"), granularity_);
  dtype_ = new QComboBox(formBox);
  dtype_->addItems({QStringLiteral("bfloat16"), QStringLiteral("float16"), QStringLiteral("float32")});
  fl->addRow(QStringLiteral("Merge dtype"), dtype_);
  fitnessKind_ = new QComboBox(formBox);
  fitnessKind_->addItems({QStringLiteral("target"), QStringLiteral("suite")});
  fitnessPath_ = new QLineEdit(formBox);
  auto* fitRow = new QHBoxLayout;
  fitRow->addWidget(fitnessKind_);
  fitRow->addWidget(fitnessPath_, 1);
  fl->addRow(QStringLiteral("Fitness"), fitRow);
  sequences_ = new QSpinBox(formBox);
  sequences_->setRange(1, 100000);
  length_ = new QSpinBox(formBox);
  length_->setRange(2, 100000);
  auto* seqRow = new QHBoxLayout;
  seqRow->addWidget(sequences_);
  seqRow->addWidget(new QLabel(QStringLiteral("sequences of length"), formBox));
  seqRow->addWidget(length_);
  fl->addRow(QStringLiteral("Target sample"), seqRow);
  generations_ = new QSpinBox(formBox);
  generations_->setRange(0, 100000);
  fl->addRow(QStringLiteral("Budget (generations)"), generations_);
  seed_ = new QSpinBox(formBox);
  seed_->setRange(0, 2147483647);
  fl->addRow(QStringLiteral("Seed"), seed_);
  device_ = new QComboBox(formBox);
  for (const auto& d : jobs::availableDevices()) device_->addItem(QString::fromStdString(d));
  device_->setEditable(true);
  fl->addRow(QStringLiteral("Device"), device_);

  auto* load = new QPushButton(QStringLiteral("Load..."), formBox);
  auto* save = new QPushButton(QStringLiteral("Save..."), formBox);
  auto* run = new QPushButton(QStringLiteral("Run"), formBox);
  auto* open = new QPushButton(QStringLiteral("Open run folder..."), formBox);
  auto* buttons = new QHBoxLayout;
  buttons->addWidget(load);
  buttons->addWidget(save);
  buttons->addWidget(open);
  buttons->addWidget(run);
  fl->addRow(buttons);
  message_ = new QLabel(formBox);
  message_->setWordWrap(true);
  message_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  fl->addRow(message_);
  log_ = new QPlainTextEdit(formBox);
  log_->setReadOnly(true);
  log_->setMaximumBlockCount(2000);
  log_->setPlaceholderText(QStringLiteral("The run's log: memory plan, one line per generation."));
  fl->addRow(log_);

  dashboard_ = new EvolveDashboard(this);
  auto* split = new QSplitter(this);
  split->addWidget(formBox);
  split->addWidget(dashboard_);
  split->setStretchFactor(1, 3);
  auto* lay = new QVBoxLayout(this);
  lay->addWidget(split);

  setForm(jobs::EvolveForm{});
  connect(runner_, &JobRunner::jobLog, this, [this](int, const QString& line) { log_->appendPlainText(line); });
  connect(runner_, &JobRunner::jobFinished, this, [this](int, bool ok, const QString& m) {
    if (!ok) log_->appendPlainText(m == QStringLiteral("cancelled") ? QStringLiteral("cancelled (the run folder can be resumed)")
                                                                  : QStringLiteral("failed: ") + m);
  });
  connect(load, &QPushButton::clicked, this, &EvolveView::loadDialog);
  connect(save, &QPushButton::clicked, this, &EvolveView::saveDialog);
  connect(run, &QPushButton::clicked, this, &EvolveView::runClicked);
  connect(open, &QPushButton::clicked, this, &EvolveView::openRunFolderDialog);
}

jobs::EvolveForm EvolveView::form() const {
  jobs::EvolveForm f = hidden_;
  f.models.clear();
  for (const auto& l : models_->toPlainText().split(QLatin1Char('\n'), Qt::SkipEmptyParts))
    if (!l.trimmed().isEmpty()) f.models.push_back(l.trimmed().toStdString());
  f.baseModel = baseModel_->text().trimmed().toStdString();
  f.method = method_->currentText().toStdString();
  f.layerGranularity = granularity_->value();
  f.dtype = dtype_->currentText().toStdString();
  f.suite.clear();
  f.target.clear();
  (fitnessKind_->currentIndex() == 0 ? f.target : f.suite) = fitnessPath_->text().trimmed().toStdString();
  f.sequences = sequences_->value();
  f.length = length_->value();
  f.generations = generations_->value();
  f.seed = static_cast<uint64_t>(seed_->value());
  f.device = device_->currentText().toStdString();
  return f;
}

void EvolveView::setForm(const jobs::EvolveForm& f) {
  hidden_ = f;
  QStringList models;
  for (const auto& m : f.models) models << QString::fromStdString(m);
  models_->setPlainText(models.join(QLatin1Char('\n')));
  baseModel_->setText(QString::fromStdString(f.baseModel));
  const QString method = QString::fromStdString(f.method);
  if (method_->findText(method) < 0) method_->addItem(method);
  method_->setCurrentText(method);
  granularity_->setValue(static_cast<int>(f.layerGranularity));
  const QString dtype = QString::fromStdString(f.dtype);
  if (dtype_->findText(dtype) < 0) dtype_->addItem(dtype);
  dtype_->setCurrentText(dtype);
  fitnessKind_->setCurrentIndex(f.suite.empty() ? 0 : 1);
  fitnessPath_->setText(QString::fromStdString(f.suite.empty() ? f.target : f.suite));
  sequences_->setValue(static_cast<int>(f.sequences));
  length_->setValue(static_cast<int>(f.length));
  generations_->setValue(f.generations);
  seed_->setValue(static_cast<int>(f.seed));
  device_->setCurrentText(QString::fromStdString(f.device));
}

QString EvolveView::message() const { return message_->text(); }
QString EvolveView::logText() const { return log_->toPlainText(); }

void EvolveView::setMessage(const QString& m, bool error) {
  message_->setText(m);
  message_->setStyleSheet(error ? QStringLiteral("color: #a02020;") : QString());
}

bool EvolveView::loadConfig(const QString& path) {
  QFile f(path);
  if (!f.open(QIODevice::ReadOnly)) {
    setMessage(QStringLiteral("Cannot read %1").arg(path), true);
    return false;
  }
  try {
    setForm(jobs::parseEvolveForm(f.readAll().toStdString()));
  } catch (...) {
    setMessage(QStringLiteral("%1: %2").arg(path, QString::fromStdString(jobs::jobMessage(std::current_exception()))), true);
    return false;
  }
  configPath_ = path;
  setMessage(QStringLiteral("Loaded %1").arg(path), false);
  return true;
}

bool EvolveView::saveConfig(const QString& path) {
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
    setMessage(QStringLiteral("Cannot write %1").arg(path), true);
    return false;
  }
  f.write(QByteArray::fromStdString(jobs::evolveFormToYaml(form())));
  configPath_ = path;
  setMessage(QStringLiteral("Saved %1").arg(path), false);
  return true;
}

void EvolveView::loadDialog() {
  const QString p = QFileDialog::getOpenFileName(this, QStringLiteral("Load EVOLVE.yaml"), {}, QStringLiteral("YAML (*.yaml *.yml)"));
  if (!p.isEmpty()) loadConfig(p);
}

void EvolveView::saveDialog() {
  const QString p = QFileDialog::getSaveFileName(this, QStringLiteral("Save EVOLVE.yaml"),
                                                 configPath_.isEmpty() ? QStringLiteral("EVOLVE.yaml") : configPath_,
                                                 QStringLiteral("YAML (*.yaml *.yml)"));
  if (!p.isEmpty()) saveConfig(p);
}

void EvolveView::openRunFolderDialog() {
  const QString d = QFileDialog::getExistingDirectory(this, QStringLiteral("Open a run folder"), runsRoot_);
  if (!d.isEmpty()) openRunFolder(d);
}

void EvolveView::openRunFolder(const QString& dir) {
  dashboard_->follow(dir);
  // Show what the run was started with (its paths are relative to the original EVOLVE.yaml, so the
  // form does not take the run folder as its file).
  QFile f(dir + QStringLiteral("/config.yaml"));
  if (f.open(QIODevice::ReadOnly)) {
    try {
      setForm(jobs::parseEvolveForm(f.readAll().toStdString()));
    } catch (...) {
    }
  }
  setMessage(QStringLiteral("Following %1").arg(dir), false);
}

void EvolveView::runClicked() {
  if (configPath_.isEmpty()) {
    saveDialog();
    if (configPath_.isEmpty()) return;
  }
  startRun();
}

namespace {
jobs::EvolveCallbacks callbacks(ProgressReporter& r, const std::atomic<bool>& cancel) {
  jobs::EvolveCallbacks cb;
  cb.cancel = &cancel;
  cb.onLog = [&r](const std::string& s) { r.log(s); };
  cb.onProgress = [&r](const jobs::EvolveStatus& s) {
    const double total = s.generations > 0 && s.population > 0 ? double(s.generations) * s.population : 0;
    const double done = double(s.generation) * s.population + s.index;
    std::string text = "generation " + std::to_string(s.generation + 1) + (s.generations ? "/" + std::to_string(s.generations) : "") +
                       ", candidate " + std::to_string(s.index) + "/" + std::to_string(s.population);
    if (s.hasBest) text += ", best " + std::to_string(s.bestFitness);
    r.progress(total > 0 ? done / total : -1, text);
  };
  return cb;
}
}  // namespace

QString EvolveView::startRun(const QString& runDirIn) {
  if (configPath_.isEmpty()) {
    setMessage(QStringLiteral("Save the configuration first."), true);
    return {};
  }
  // Rewrite the file only when the form changed it (a hand-written EVOLVE.yaml keeps its comments).
  bool same = false;
  QFile existing(configPath_);
  if (existing.open(QIODevice::ReadOnly)) {
    try {
      same = jobs::parseEvolveForm(existing.readAll().toStdString()) == form();
    } catch (...) {
    }
    existing.close();
  }
  if (!same && !saveConfig(configPath_)) return {};
  const std::string problem = jobs::validateEvolveConfig(configPath_.toStdString());
  if (!problem.empty()) {
    setMessage(QString::fromStdString(problem), true);
    return {};
  }
  QString runDir = runDirIn;
  if (runDir.isEmpty())
    runDir = QString::fromStdString(
        jobs::newRunDir(runsRoot_.toStdString(), "evolve", QFileInfo(configPath_).completeBaseName().toStdString()));
  const std::string config = configPath_.toStdString(), dir = runDir.toStdString();
  runner_->enqueue({QStringLiteral("evolve %1").arg(QFileInfo(runDir).fileName()), runDir,
                    [config, dir](ProgressReporter& r, const std::atomic<bool>& cancel) {
                      jobs::startEvolve(config, dir, callbacks(r, cancel));
                    }});
  dashboard_->follow(runDir);
  setMessage(QStringLiteral("Queued; run folder %1").arg(runDir), false);
  Q_EMIT runStarted(runDir);
  return runDir;
}

void EvolveView::resumeRun(const QString& runDir) {
  const std::string dir = runDir.toStdString();
  QFile::remove(runDir + QStringLiteral("/error.txt"));
  runner_->enqueue({QStringLiteral("resume %1").arg(QFileInfo(runDir).fileName()), runDir,
                    [dir](ProgressReporter& r, const std::atomic<bool>& cancel) {
                      jobs::resumeEvolve(dir, callbacks(r, cancel));
                    }});
  dashboard_->follow(runDir);
  setMessage(QStringLiteral("Resuming %1").arg(runDir), false);
  Q_EMIT runStarted(runDir);
}

}  // namespace kh
