// Train view (see train_view.h).
#include "widgets/train_view.h"

#include "widgets/qcp.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleValidator>
#include <QEventLoop>
#include <QRegularExpressionValidator>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QLocale>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QSpinBox>
#include <QSplitter>
#include <QTabWidget>
#include <QTextBrowser>
#include <QVBoxLayout>
#include <algorithm>
#include <climits>
#include <optional>
#include <thread>

#include "core/jobs/jobs.h"
#include "widgets/train_dashboard.h"

namespace kh {

namespace {
QString q(const std::string& s) { return QString::fromStdString(s); }
std::string s(const QString& t) { return t.trimmed().toStdString(); }
// Doubles are edited as text in their shortest exact form, so a TRAIN.yaml round-trips unchanged.
QString numText(double v) { return QString::number(v, 'g', QLocale::FloatingPointShortest); }
double numOf(const QLineEdit* e, double fallback) {
  bool ok = false;
  const double v = e->text().trimmed().toDouble(&ok);
  return ok ? v : fallback;
}
QLineEdit* numberEdit(QWidget* parent) {
  auto* e = new QLineEdit(parent);
  auto* v = new QDoubleValidator(e);
  v->setLocale(QLocale::c());
  e->setValidator(v);
  return e;
}
QSpinBox* spin(QWidget* parent, int lo, int hi) {
  auto* b = new QSpinBox(parent);
  b->setRange(lo, hi);
  return b;
}
QComboBox* combo(QWidget* parent, const QStringList& items, bool editable = false) {
  auto* c = new QComboBox(parent);
  c->addItems(items);
  c->setEditable(editable);
  return c;
}
void setCombo(QComboBox* c, const std::string& v) {
  const QString t = q(v);
  if (c->findText(t) < 0) c->addItem(t);
  c->setCurrentText(t);
}
QString html(const std::string& t) { return q(t).toHtmlEscaped(); }
}  // namespace

TrainView::TrainView(JobRunner* runner, QWidget* parent) : QWidget(parent), runner_(runner) {
  auto* formBox = new QWidget(this);
  auto* formLay = new QVBoxLayout(formBox);
  formLay->setContentsMargins(0, 0, 0, 0);

  auto* dataBox = new QGroupBox(QStringLiteral("Model and data"), formBox);
  auto* fl = new QFormLayout(dataBox);
  model_ = new QLineEdit(dataBox);
  model_->setPlaceholderText(QStringLiteral("base model folder (relative to TRAIN.yaml)"));
  fl->addRow(QStringLiteral("Base model"), model_);
  data_ = new QLineEdit(dataBox);
  data_->setPlaceholderText(QStringLiteral("JSONL: messages, ShareGPT, Alpaca or prompt/completion"));
  fl->addRow(QStringLiteral("Data"), data_);
  evalData_ = new QLineEdit(dataBox);
  evalData_->setPlaceholderText(QStringLiteral("optional; else a split of the data"));
  fl->addRow(QStringLiteral("Eval data"), evalData_);
  evalSplit_ = numberEdit(dataBox);
  fl->addRow(QStringLiteral("Eval split"), evalSplit_);
  template_ = new QLineEdit(dataBox);
  template_->setPlaceholderText(QStringLiteral("the model's own (or gemma, llm-jp-3, chatml, ...)"));
  fl->addRow(QStringLiteral("Chat template"), template_);
  labels_ = combo(dataBox, {QStringLiteral("assistant"), QStringLiteral("all"), QStringLiteral("last_turn")});
  fl->addRow(QStringLiteral("Labels"), labels_);
  maxLength_ = spin(dataBox, 2, INT_MAX);
  fl->addRow(QStringLiteral("Max length"), maxLength_);
  maskEot_ = new QCheckBox(QStringLiteral("mask the end-of-turn label (the classic bug; demonstrations only)"), dataBox);
  fl->addRow(maskEot_);
  allowUnterminated_ = new QCheckBox(QStringLiteral("allow answers that do not end on a stop token"), dataBox);
  fl->addRow(allowUnterminated_);

  auto* methodBox = new QGroupBox(QStringLiteral("Method"), formBox);
  auto* ml = new QFormLayout(methodBox);
  method_ = combo(methodBox, {QStringLiteral("lora"), QStringLiteral("full")});
  ml->addRow(QStringLiteral("Method"), method_);
  rank_ = spin(methodBox, 1, 65536);
  alpha_ = numberEdit(methodBox);
  dropout_ = numberEdit(methodBox);
  auto* loraRow = new QHBoxLayout;
  loraRow->addWidget(new QLabel(QStringLiteral("rank"), methodBox));
  loraRow->addWidget(rank_);
  loraRow->addWidget(new QLabel(QStringLiteral("alpha"), methodBox));
  loraRow->addWidget(alpha_);
  loraRow->addWidget(new QLabel(QStringLiteral("dropout"), methodBox));
  loraRow->addWidget(dropout_);
  ml->addRow(QStringLiteral("LoRA"), loraRow);
  targets_ = new QLineEdit(methodBox);
  targets_->setPlaceholderText(QStringLiteral("regex over module names, e.g. q_proj|v_proj"));
  ml->addRow(QStringLiteral("Target modules"), targets_);
  rsLora_ = new QCheckBox(QStringLiteral("rsLoRA (scale alpha / sqrt(rank))"), methodBox);
  ml->addRow(rsLora_);

  auto* optBox = new QGroupBox(QStringLiteral("Optimisation"), formBox);
  auto* ol = new QFormLayout(optBox);
  lr_ = numberEdit(optBox);
  ol->addRow(QStringLiteral("Learning rate"), lr_);
  schedule_ = combo(optBox, {QStringLiteral("cosine"), QStringLiteral("linear"), QStringLiteral("constant")});
  warmup_ = spin(optBox, 0, INT_MAX);
  auto* schedRow = new QHBoxLayout;
  schedRow->addWidget(schedule_);
  schedRow->addWidget(new QLabel(QStringLiteral("warm-up steps"), optBox));
  schedRow->addWidget(warmup_);
  ol->addRow(QStringLiteral("Schedule"), schedRow);
  steps_ = spin(optBox, 0, INT_MAX);
  steps_->setSpecialValueText(QStringLiteral("from epochs"));
  epochs_ = spin(optBox, 1, INT_MAX);
  auto* stepsRow = new QHBoxLayout;
  stepsRow->addWidget(steps_);
  stepsRow->addWidget(new QLabel(QStringLiteral("epochs"), optBox));
  stepsRow->addWidget(epochs_);
  ol->addRow(QStringLiteral("Steps"), stepsRow);
  batch_ = spin(optBox, 1, INT_MAX);
  accum_ = spin(optBox, 1, INT_MAX);
  auto* batchRow = new QHBoxLayout;
  batchRow->addWidget(batch_);
  batchRow->addWidget(new QLabel(QStringLiteral("accumulation"), optBox));
  batchRow->addWidget(accum_);
  ol->addRow(QStringLiteral("Batch"), batchRow);
  weightDecay_ = numberEdit(optBox);
  clipNorm_ = numberEdit(optBox);
  auto* wdRow = new QHBoxLayout;
  wdRow->addWidget(weightDecay_);
  wdRow->addWidget(new QLabel(QStringLiteral("clip norm"), optBox));
  wdRow->addWidget(clipNorm_);
  ol->addRow(QStringLiteral("Weight decay"), wdRow);
  seed_ = new QLineEdit(optBox);
  seed_->setValidator(new QRegularExpressionValidator(QRegularExpression(QStringLiteral("[0-9]{1,19}")), seed_));
  ol->addRow(QStringLiteral("Seed"), seed_);

  auto* evalBox = new QGroupBox(QStringLiteral("Eval, saving, device"), formBox);
  auto* el = new QFormLayout(evalBox);
  evalEvery_ = spin(evalBox, 0, INT_MAX);
  evalEvery_->setSpecialValueText(QStringLiteral("only at the end"));
  el->addRow(QStringLiteral("Eval every (steps)"), evalEvery_);
  evalPrompts_ = spin(evalBox, 0, INT_MAX);
  evalMaxNew_ = spin(evalBox, 1, INT_MAX);
  auto* evalRow = new QHBoxLayout;
  evalRow->addWidget(evalPrompts_);
  evalRow->addWidget(new QLabel(QStringLiteral("max new tokens"), evalBox));
  evalRow->addWidget(evalMaxNew_);
  el->addRow(QStringLiteral("Stop-rate prompts"), evalRow);
  saveEvery_ = spin(evalBox, 0, INT_MAX);
  saveEvery_->setSpecialValueText(QStringLiteral("only at the end"));
  el->addRow(QStringLiteral("Checkpoint every"), saveEvery_);
  dtype_ = combo(evalBox, {});
  dtype_->setObjectName(QStringLiteral("dtype"));
  for (const auto& d : jobs::trainingDtypes()) dtype_->addItem(q(d));
  dtype_->setToolTip(QStringLiteral("bf16: base weights in bf16; adapters, master weights, AdamW moments and the loss stay fp32"));
  device_ = combo(evalBox, {}, true);
  for (const auto& d : jobs::availableDevices()) device_->addItem(q(d));
  auto* devRow = new QHBoxLayout;
  devRow->addWidget(dtype_);
  devRow->addWidget(new QLabel(QStringLiteral("device"), evalBox));
  devRow->addWidget(device_, 1);
  el->addRow(QStringLiteral("Compute dtype"), devRow);
  gradCheckpointing_ = new QCheckBox(QStringLiteral("gradient checkpointing (recompute layers in backward)"), evalBox);
  gradCheckpointing_->setToolTip(QStringLiteral("Keeps one hidden state per layer instead of all activations: much less "
                                                "memory for long sequences, about a third more compute"));
  el->addRow(QStringLiteral("Memory"), gradCheckpointing_);
  exportMerged_ = new QCheckBox(QStringLiteral("also write merged/ (a normal model folder)"), evalBox);
  mergedDtype_ = combo(evalBox, {QString(), QStringLiteral("fp32"), QStringLiteral("bf16"), QStringLiteral("fp16")});
  mergedDtype_->setToolTip(QStringLiteral("empty: the base model's stored dtypes"));
  auto* mergedRow = new QHBoxLayout;
  mergedRow->addWidget(exportMerged_, 1);
  mergedRow->addWidget(mergedDtype_);
  el->addRow(QStringLiteral("Export"), mergedRow);

  for (QWidget* b : {static_cast<QWidget*>(dataBox), static_cast<QWidget*>(methodBox), static_cast<QWidget*>(optBox),
                     static_cast<QWidget*>(evalBox)})
    formLay->addWidget(b);
  formLay->addStretch(1);
  auto* scroll = new QScrollArea(this);
  scroll->setWidget(formBox);
  scroll->setWidgetResizable(true);
  scroll->setMinimumWidth(360);

  auto* load = new QPushButton(QStringLiteral("Load..."), this);
  auto* save = new QPushButton(QStringLiteral("Save..."), this);
  auto* open = new QPushButton(QStringLiteral("Open run..."), this);
  auditButton_ = new QPushButton(QStringLiteral("Audit"), this);
  auditButton_->setToolTip(QStringLiteral("Tokenize the data and show which tokens are trained, without training"));
  startButton_ = new QPushButton(QStringLiteral("Start"), this);
  stopButton_ = new QPushButton(QStringLiteral("Stop"), this);
  resumeButton_ = new QPushButton(QStringLiteral("Resume"), this);
  compareButton_ = new QPushButton(QStringLiteral("Chat vs base"), this);
  compareButton_->setToolTip(QStringLiteral("Open the fine-tuned model beside its base in the Chat page's Compare tab"));
  auto* row1 = new QHBoxLayout;
  row1->addWidget(load);
  row1->addWidget(save);
  row1->addWidget(open);
  row1->addWidget(auditButton_);
  auto* row2 = new QHBoxLayout;
  row2->addWidget(startButton_);
  row2->addWidget(stopButton_);
  row2->addWidget(resumeButton_);
  row2->addWidget(compareButton_);
  message_ = new QLabel(this);
  message_->setWordWrap(true);
  message_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  progress_ = new QProgressBar(this);
  progress_->setRange(0, 1000);
  progress_->setTextVisible(false);
  progressLabel_ = new QLabel(QStringLiteral("idle"), this);
  log_ = new QPlainTextEdit(this);
  log_->setReadOnly(true);
  log_->setMaximumBlockCount(4000);
  log_->setFont(QFont(QStringLiteral("monospace"), 8));
  log_->setPlaceholderText(QStringLiteral("The run's log: label audit, progress and eval lines."));

  auto* left = new QWidget(this);
  auto* ll = new QVBoxLayout(left);
  ll->setContentsMargins(0, 0, 0, 0);
  ll->addWidget(scroll, 3);
  ll->addLayout(row1);
  ll->addLayout(row2);
  ll->addWidget(message_);
  ll->addWidget(progress_);
  ll->addWidget(progressLabel_);
  ll->addWidget(log_, 1);

  // The audit tab: the stop share big, the counts, the length histogram, the examples token by token.
  auto* auditTab = new QWidget(this);
  auto* al = new QVBoxLayout(auditTab);
  share_ = new QLabel(QStringLiteral("Press Audit to see which tokens the loss trains."), auditTab);
  QFont big = share_->font();
  big.setPointSize(20);
  big.setBold(true);
  share_->setFont(big);
  share_->setWordWrap(true);
  auditStats_ = new QLabel(auditTab);
  auditStats_->setWordWrap(true);
  auditStats_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  chatDiff_ = new QLabel(auditTab);
  memoryPlan_ = new QLabel(auditTab);
  memoryPlan_->setWordWrap(true);
  memoryPlan_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  chatDiff_->setWordWrap(true);
  lengths_ = new QCustomPlot(auditTab);
  lengths_->setMinimumHeight(140);
  lengths_->xAxis->setLabel(QStringLiteral("tokens per example (before cutting)"));
  lengths_->yAxis->setLabel(QStringLiteral("examples"));
  auto* bars = new QCPBars(lengths_->xAxis, lengths_->yAxis);
  bars->setName(QStringLiteral("examples"));
  bars->setBrush(QColor(90, 120, 200, 160));
  bars->setPen(QPen(QColor(60, 90, 170)));
  examples_ = new QTextBrowser(auditTab);
  auto* auditSplit = new QSplitter(Qt::Vertical, auditTab);
  auditSplit->addWidget(lengths_);
  auditSplit->addWidget(examples_);
  auditSplit->setStretchFactor(1, 2);
  al->addWidget(share_);
  al->addWidget(auditStats_);
  al->addWidget(chatDiff_);
  al->addWidget(memoryPlan_);
  al->addWidget(auditSplit, 1);

  dashboard_ = new TrainDashboard(this);
  tabs_ = new QTabWidget(this);
  tabs_->addTab(dashboard_, QStringLiteral("Plots"));
  tabs_->addTab(auditTab, QStringLiteral("Label audit"));

  auto* split = new QSplitter(this);
  split->addWidget(left);
  split->addWidget(tabs_);
  split->setStretchFactor(1, 3);
  auto* lay = new QVBoxLayout(this);
  lay->addWidget(split);

  setForm(jobs::TrainForm{});
  connect(load, &QPushButton::clicked, this, &TrainView::loadDialog);
  connect(save, &QPushButton::clicked, this, &TrainView::saveDialog);
  connect(open, &QPushButton::clicked, this, &TrainView::openRunFolderDialog);
  connect(auditButton_, &QPushButton::clicked, this, [this] {
    if (configPath_.isEmpty()) saveDialog();
    if (!configPath_.isEmpty()) audit();
  });
  connect(startButton_, &QPushButton::clicked, this, &TrainView::startClicked);
  connect(stopButton_, &QPushButton::clicked, this, &TrainView::stop);
  connect(resumeButton_, &QPushButton::clicked, this, [this] {
    if (!dashboard_->folder().isEmpty()) resumeRun(dashboard_->folder());
  });
  connect(compareButton_, &QPushButton::clicked, this, &TrainView::chatVsBase);
  connect(method_, &QComboBox::currentTextChanged, this, [this](const QString& m) {
    const bool lora = m == QStringLiteral("lora");
    for (QWidget* w : {static_cast<QWidget*>(rank_), static_cast<QWidget*>(alpha_), static_cast<QWidget*>(dropout_),
                       static_cast<QWidget*>(targets_), static_cast<QWidget*>(rsLora_)})
      w->setEnabled(lora);
  });
  connect(runner_, &JobRunner::jobLog, this, [this](int id, const QString& line) {
    if (id == jobId_) log_->appendPlainText(line);
  });
  connect(runner_, &JobRunner::jobProgress, this, [this](int id, double f, const QString& text) {
    if (id != jobId_) return;
    if (f >= 0) progress_->setValue(static_cast<int>(f * 1000));
    progressLabel_->setText(text);
  });
  connect(runner_, &JobRunner::jobFinished, this, [this](int id, bool ok, const QString& m) {
    if (id != jobId_) return;
    jobId_ = 0;
    if (!ok)
      log_->appendPlainText(m == QStringLiteral("cancelled") ? QStringLiteral("stopped (the run folder can be resumed)")
                                                           : QStringLiteral("failed: ") + m);
    dashboard_->poll();
    if (ok && !pendingCompare_.isEmpty()) {
      const QString run = pendingCompare_;
      pendingCompare_.clear();
      const auto models = jobs::trainRunModels(run.toStdString());
      if (!models.mergedDir.empty()) Q_EMIT compareRequested(q(models.mergedDir), q(models.baseModel));
    } else if (ok) {
      progress_->setValue(1000);
      setMessage(QStringLiteral("Finished: %1").arg(dashboard_->folder()), false);
    } else {
      pendingCompare_.clear();
      setMessage(m == QStringLiteral("cancelled") ? QStringLiteral("Stopped; Resume goes on from the last checkpoint.") : m,
                 m != QStringLiteral("cancelled"));
    }
    updateButtons();
  });
  connect(dashboard_, &TrainDashboard::updated, this, [this] {
    if (jobId_ == 0 && dashboard_->lastStep() > 0)
      progressLabel_->setText(QStringLiteral("step %1 · loss %2 · %3 tokens/s")
                                  .arg(dashboard_->lastStep())
                                  .arg(dashboard_->lastLoss(), 0, 'f', 4)
                                  .arg(dashboard_->lastTokensPerSecond(), 0, 'f', 0));
    updateButtons();
  });
  updateButtons();
}

jobs::TrainForm TrainView::form() const {
  jobs::TrainForm f = hidden_;
  f.model = s(model_->text());
  f.data = s(data_->text());
  f.evalData = s(evalData_->text());
  f.evalSplit = numOf(evalSplit_, hidden_.evalSplit);
  f.chatTemplate = s(template_->text());
  f.method = s(method_->currentText());
  f.rank = rank_->value();
  f.alpha = numOf(alpha_, hidden_.alpha);
  f.dropout = numOf(dropout_, hidden_.dropout);
  f.targetModules = s(targets_->text());
  f.rsLora = rsLora_->isChecked();
  f.learningRate = numOf(lr_, hidden_.learningRate);
  f.weightDecay = numOf(weightDecay_, hidden_.weightDecay);
  f.schedule = s(schedule_->currentText());
  f.warmupSteps = warmup_->value();
  f.steps = steps_->value();
  f.epochs = epochs_->value();
  f.batchSize = batch_->value();
  f.gradAccum = accum_->value();
  f.clipNorm = numOf(clipNorm_, hidden_.clipNorm);
  f.seed = seed_->text().isEmpty() ? 0 : seed_->text().toULongLong();
  f.maxLength = maxLength_->value();
  f.labels = s(labels_->currentText());
  f.maskEndOfTurn = maskEot_->isChecked();
  f.allowUnterminated = allowUnterminated_->isChecked();
  f.evalEvery = evalEvery_->value();
  f.evalPrompts = evalPrompts_->value();
  f.evalMaxNewTokens = evalMaxNew_->value();
  f.saveEvery = saveEvery_->value();
  f.gradientCheckpointing = gradCheckpointing_->isChecked();
  f.dtype = s(dtype_->currentText());
  f.device = s(device_->currentText());
  f.exportMerged = exportMerged_->isChecked();
  f.mergedDtype = s(mergedDtype_->currentText());
  return f;
}

void TrainView::setForm(const jobs::TrainForm& f) {
  hidden_ = f;
  model_->setText(q(f.model));
  data_->setText(q(f.data));
  evalData_->setText(q(f.evalData));
  evalSplit_->setText(numText(f.evalSplit));
  template_->setText(q(f.chatTemplate));
  setCombo(method_, f.method);
  rank_->setValue(static_cast<int>(f.rank));
  alpha_->setText(numText(f.alpha));
  dropout_->setText(numText(f.dropout));
  targets_->setText(q(f.targetModules));
  rsLora_->setChecked(f.rsLora);
  lr_->setText(numText(f.learningRate));
  weightDecay_->setText(numText(f.weightDecay));
  setCombo(schedule_, f.schedule);
  warmup_->setValue(static_cast<int>(f.warmupSteps));
  steps_->setValue(static_cast<int>(f.steps));
  epochs_->setValue(static_cast<int>(f.epochs));
  batch_->setValue(static_cast<int>(f.batchSize));
  accum_->setValue(static_cast<int>(f.gradAccum));
  clipNorm_->setText(numText(f.clipNorm));
  seed_->setText(QString::number(f.seed));
  maxLength_->setValue(static_cast<int>(f.maxLength));
  setCombo(labels_, f.labels);
  maskEot_->setChecked(f.maskEndOfTurn);
  allowUnterminated_->setChecked(f.allowUnterminated);
  evalEvery_->setValue(static_cast<int>(f.evalEvery));
  evalPrompts_->setValue(static_cast<int>(f.evalPrompts));
  evalMaxNew_->setValue(static_cast<int>(f.evalMaxNewTokens));
  saveEvery_->setValue(static_cast<int>(f.saveEvery));
  gradCheckpointing_->setChecked(f.gradientCheckpointing);
  setCombo(dtype_, f.dtype);
  setCombo(device_, f.device);
  exportMerged_->setChecked(f.exportMerged);
  setCombo(mergedDtype_, f.mergedDtype);
}

QString TrainView::message() const { return message_->text(); }
QString TrainView::logText() const { return log_->toPlainText(); }
QString TrainView::memoryPlanText() const { return memoryPlan_->text(); }
QString TrainView::progressText() const { return progressLabel_->text(); }
int TrainView::progressValue() const { return progress_->value(); }
bool TrainView::chatVsBaseEnabled() const { return compareButton_->isEnabled(); }
bool TrainView::resumeEnabled() const { return resumeButton_->isEnabled(); }

void TrainView::setMessage(const QString& m, bool error) {
  messageError_ = error;
  message_->setText(m);
  message_->setStyleSheet(error ? QStringLiteral("color: #a02020;") : QString());
}

bool TrainView::loadConfig(const QString& path) {
  QFile f(path);
  if (!f.open(QIODevice::ReadOnly)) {
    setMessage(QStringLiteral("%1: cannot read").arg(path), true);
    return false;
  }
  try {
    setForm(jobs::parseTrainForm(f.readAll().toStdString()));
  } catch (...) {
    // "TRAIN.yaml:7: cause" names the file the user opened.
    QString m = QString::fromStdString(jobs::jobMessage(std::current_exception()));
    if (m.startsWith(QStringLiteral("TRAIN.yaml"))) m = path + m.mid(10);
    setMessage(m, true);
    return false;
  }
  configPath_ = path;
  hasAudit_ = false;
  setMessage(QStringLiteral("Loaded %1").arg(path), false);
  return true;
}

bool TrainView::saveConfig(const QString& path) {
  // Written beside and renamed into place: a failed save never leaves half a config.
  const QString partial = path + QStringLiteral(".partial");
  QFile f(partial);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate) ||
      f.write(QByteArray::fromStdString(jobs::trainFormToYaml(form()))) < 0 || !f.flush()) {
    setMessage(QStringLiteral("%1: cannot write").arg(path), true);
    return false;
  }
  f.close();
  QFile::remove(path);
  if (!QFile::rename(partial, path)) {
    setMessage(QStringLiteral("%1: cannot rename into place").arg(path), true);
    return false;
  }
  configPath_ = path;
  setMessage(QStringLiteral("Saved %1").arg(path), false);
  return true;
}

// Rewrites the file only when the form changed it (a hand-written TRAIN.yaml keeps its comments).
bool TrainView::saveIfChanged() {
  if (configPath_.isEmpty()) {
    setMessage(QStringLiteral("Save the configuration first."), true);
    return false;
  }
  QFile existing(configPath_);
  bool same = false;
  if (existing.open(QIODevice::ReadOnly)) {
    try {
      same = jobs::parseTrainForm(existing.readAll().toStdString()) == form();
    } catch (...) {
    }
  }
  return same || saveConfig(configPath_);
}

void TrainView::loadDialog() {
  const QString p = QFileDialog::getOpenFileName(this, QStringLiteral("Load TRAIN.yaml"), {}, QStringLiteral("YAML (*.yaml *.yml)"));
  if (!p.isEmpty()) loadConfig(p);
}

void TrainView::saveDialog() {
  const QString p = QFileDialog::getSaveFileName(this, QStringLiteral("Save TRAIN.yaml"),
                                                 configPath_.isEmpty() ? QStringLiteral("TRAIN.yaml") : configPath_,
                                                 QStringLiteral("YAML (*.yaml *.yml)"));
  if (!p.isEmpty()) saveConfig(p);
}

void TrainView::openRunFolderDialog() {
  const QString d = QFileDialog::getExistingDirectory(this, QStringLiteral("Open a training run folder"), runsRoot_);
  if (!d.isEmpty()) openRunFolder(d);
}

bool TrainView::audit() {
  if (!saveIfChanged()) return false;
  // Tokenizing a large data set takes a while: it runs on a thread of its own while this one keeps
  // painting (user input waits, so nothing can start twice), and audit() still returns its verdict.
  setMessage(QStringLiteral("Auditing %1…").arg(QFileInfo(configPath_).fileName()), false);
  std::optional<jobs::TrainAudit> result;
  std::exception_ptr error;
  QEventLoop wait;
  std::thread worker([&, path = configPath_.toStdString()] {
    try {
      result = jobs::auditTrainConfig(path);
    } catch (...) {
      error = std::current_exception();
    }
    QMetaObject::invokeMethod(&wait, "quit", Qt::QueuedConnection);
  });
  auditing_ = true;
  wait.exec(QEventLoop::ExcludeUserInputEvents);
  worker.join();
  auditing_ = false;
  if (error) {
    setMessage(QString::fromStdString(jobs::jobMessage(error)), true);
    return false;
  }
  showAudit(*result);
  setMessage(audit_.ok ? QStringLiteral("Label audit passed: every answer ends on a trained stop token.")
                       : QStringLiteral("Label audit FAILED: %1 of %2 answers end on a trained stop token; the model would "
                                        "not learn to stop.")
                             .arg(audit_.terminatedTurns)
                             .arg(audit_.assistantTurns),
             !audit_.ok);
  return true;
}

QString TrainView::stopShareText() const { return share_->text(); }
bool TrainView::stopShareIsRed() const { return hasAudit_ && !audit_.ok; }
QString TrainView::auditHtml() const { return examples_->toHtml(); }

void TrainView::showAudit(const jobs::TrainAudit& a) {
  audit_ = a;
  hasAudit_ = true;
  share_->setText(QStringLiteral("%1% of answers end on a trained stop token (%2 / %3)")
                      .arg(100.0 * a.stopShare, 0, 'f', 1)
                      .arg(a.terminatedTurns)
                      .arg(a.assistantTurns));
  share_->setStyleSheet(a.ok ? QStringLiteral("color: #1d7a30;") : QStringLiteral("color: #c01818;"));
  QStringList stops;
  for (const auto& t : a.stopTokens) stops << q(t);
  auditStats_->setText(
      QStringLiteral("Format %1, stop ids %2. %3 training examples (%4 held out), %5 tokens, %6 trained. Tokens per "
                     "example: min %7, median %8, p90 %9, max %10; cut by max_length %11: %12 example(s), %13 answer(s). "
                     "Planned: %14 steps.")
          .arg(q(a.format), stops.join(QStringLiteral(", ")))
          .arg(a.examples)
          .arg(a.heldOutExamples)
          .arg(a.tokens)
          .arg(a.trainedTokens)
          .arg(a.minLength)
          .arg(a.medianLength)
          .arg(a.p90Length)
          .arg(a.maxLength)
          .arg(a.maxLengthSetting)
          .arg(a.cutExamples)
          .arg(a.cutTurns)
          .arg(a.steps));
  const bool differs = a.chatDiff.rfind("DIFFER", 0) == 0;
  chatDiff_->setText(QStringLiteral("Training vs chat rendering (tokens before the last answer): %1").arg(q(a.chatDiff)));
  chatDiff_->setStyleSheet(differs ? QStringLiteral("color: #c01818;") : QString());
  // The memory plan the run will print before it loads the model: what to check before Start.
  const auto gib = [](uint64_t b) { return QString::number(static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0), 'f', 2); };
  memoryPlan_->setText(QStringLiteral("<b>Memory plan: %1 GiB</b> per step on the device (weights %2 + trainable and "
                                      "optimiser %3 + activations %4 + logits %5 GiB), batch %6 x %7 tokens, %8 weights, "
                                      "gradient checkpointing %9. An estimate: allocator slack and libtorch buffers are "
                                      "not counted.<br><span style='font-family:monospace'>%10</span>")
                           .arg(gib(a.memory.total), gib(a.memory.weights), gib(a.memory.trainable),
                                gib(a.memory.activations), gib(a.memory.logits))
                           .arg(a.memory.batch)
                           .arg(a.memory.sequence)
                           .arg(q(form().dtype), a.memory.gradientCheckpointing ? QStringLiteral("on") : QStringLiteral("off"),
                                html(a.memory.line)));

  // Length histogram (20 bins) with max_length marked.
  const int64_t hi = std::max<int64_t>(a.maxLength, 1);
  const int bins = 20;
  const double width = std::max(1.0, static_cast<double>(hi) / bins);
  QVector<double> x(bins), y(bins, 0);
  for (int i = 0; i < bins; ++i) x[i] = (i + 0.5) * width;
  for (auto l : a.lengths) y[std::min(bins - 1, static_cast<int>(static_cast<double>(l) / width))] += 1;
  auto* bars = qobject_cast<QCPBars*>(lengths_->plottable(0));
  bars->setWidth(width * 0.9);
  bars->setData(x, y);
  for (int i = lengths_->itemCount() - 1; i >= 0; --i) lengths_->removeItem(i);
  auto* cut = new QCPItemStraightLine(lengths_);
  cut->setPen(QPen(QColor(200, 40, 40), 1.5, Qt::DashLine));
  cut->point1->setCoords(static_cast<double>(a.maxLengthSetting), 0);
  cut->point2->setCoords(static_cast<double>(a.maxLengthSetting), 1);
  lengths_->rescaleAxes();
  lengths_->xAxis->setRange(0, std::max<double>(static_cast<double>(hi), static_cast<double>(a.maxLengthSetting)) * 1.05);
  lengths_->yAxis->setRange(0, *std::max_element(y.begin(), y.end()) * 1.15 + 0.5);
  lengths_->replot(QCustomPlot::rpQueuedReplot);

  // Examples token by token: trained tokens on green, masked ones grey, the stop token that ends each
  // answer bold (red when the loss never sees it).
  QString h = QStringLiteral(
      "<p style='font-size:small'><span style='background:#bfe8c0'>trained</span> "
      "<span style='color:#888'>masked (prompt)</span> "
      "<span style='background:#8fd694'><b>answer's stop, trained</b></span> "
      "<span style='background:#f4b4b4'><b>answer's stop, MASKED</b></span></p>");
  for (const auto& ex : a.shown) {
    h += QStringLiteral("<p><b>%1</b> — %2 tokens%3<br><span style='font-family:monospace'>")
             .arg(html(ex.source))
             .arg(ex.fullLength)
             .arg(ex.cut ? QStringLiteral(" (cut)") : QString());
    for (const auto& t : ex.tokens) {
      QString style;
      if (t.endsAnswer && t.trained) style = QStringLiteral("background:#8fd694;font-weight:bold");
      else if (t.endsAnswer) style = QStringLiteral("background:#f4b4b4;font-weight:bold");
      else if (t.trained) style = QStringLiteral("background:#bfe8c0");
      else style = QStringLiteral("color:#888");
      h += QStringLiteral("<span class='%1' style='%2'>%3</span> ")
               .arg(t.trained ? QStringLiteral("trained") : QStringLiteral("masked"), style, html(t.piece));
    }
    h += QStringLiteral("</span></p>");
  }
  examples_->setHtml(h);
  tabs_->setCurrentIndex(1);
}

void TrainView::startClicked() {
  if (configPath_.isEmpty()) {
    saveDialog();
    if (configPath_.isEmpty()) return;
  }
  startRun();
}

int TrainView::enqueue(const QString& name, const QString& runDir, JobFn fn) {
  jobName_ = name;
  jobId_ = runner_->enqueue({name, runDir, std::move(fn)});
  progress_->setValue(0);
  progressLabel_->setText(QStringLiteral("queued"));
  updateButtons();
  return jobId_;
}

namespace {
// The engine's structured progress (every step; the reporter throttles) drives the bar and its line;
// the engine's text lines only go to the log.
jobs::TrainCallbacks callbacks(ProgressReporter& r, const std::atomic<bool>& cancel) {
  jobs::TrainCallbacks cb;
  cb.cancel = &cancel;
  cb.onLog = [&r](const std::string& line) { r.log(line); };
  cb.onProgress = [&r](const jobs::TrainStatus& s) {
    char text[160];
    std::snprintf(text, sizeof text, "step %lld/%lld · loss %.4f · lr %.3g · %.0f tokens/s · ETA %.0f s",
                  static_cast<long long>(s.step), static_cast<long long>(s.steps), s.loss, s.lr, s.tokensPerSecond, s.etaSeconds);
    r.progress(s.steps > 0 ? static_cast<double>(s.step) / static_cast<double>(s.steps) : -1, text);
  };
  return cb;
}
}  // namespace

QString TrainView::startRun(const QString& runDirIn) {
  if (running()) {
    setMessage(QStringLiteral("A training run from this view is already running."), true);
    return {};
  }
  if (!saveIfChanged()) return {};
  const std::string problem = jobs::validateTrainConfig(configPath_.toStdString());
  if (!problem.empty()) {
    setMessage(q(problem), true);
    return {};
  }
  // The audit comes first, every time: a run whose answers would not learn to stop never starts.
  if (!audit()) return {};
  if (!audit_.ok && !form().allowUnterminated) {
    setMessage(QStringLiteral("Refused: only %1 of %2 answers end on a trained stop token (%3%); the model would not learn "
                              "to stop. See the label audit (allow_unterminated overrides).")
                   .arg(audit_.terminatedTurns)
                   .arg(audit_.assistantTurns)
                   .arg(100.0 * audit_.stopShare, 0, 'f', 1),
               true);
    return {};
  }
  QString runDir = runDirIn;
  if (runDir.isEmpty())
    runDir = q(jobs::newRunDir(runsRoot_.toStdString(), "train", QFileInfo(configPath_).completeBaseName().toStdString()));
  const std::string config = configPath_.toStdString(), dir = runDir.toStdString();
  log_->clear();
  enqueue(QStringLiteral("train %1").arg(QFileInfo(runDir).fileName()), runDir,
          [config, dir](ProgressReporter& r, const std::atomic<bool>& cancel) { jobs::startTraining(config, dir, callbacks(r, cancel)); });
  dashboard_->follow(runDir);
  tabs_->setCurrentIndex(0);
  setMessage(QStringLiteral("Queued; run folder %1").arg(runDir), false);
  Q_EMIT runStarted(runDir);
  return runDir;
}

void TrainView::resumeRun(const QString& runDir) {
  if (running()) {
    setMessage(QStringLiteral("A training run from this view is already running."), true);
    return;
  }
  const auto models = jobs::trainRunModels(runDir.toStdString());
  if (!models.resumable) {
    setMessage(QStringLiteral("%1: %2").arg(runDir, models.finished ? QStringLiteral("the run is finished")
                                                                     : QStringLiteral("has no checkpoint to resume from")),
               true);
    return;
  }
  QFile::remove(runDir + QStringLiteral("/error.txt"));
  const std::string dir = runDir.toStdString();
  enqueue(QStringLiteral("resume %1").arg(QFileInfo(runDir).fileName()), runDir,
          [dir](ProgressReporter& r, const std::atomic<bool>& cancel) { jobs::resumeTraining(dir, callbacks(r, cancel)); });
  dashboard_->follow(runDir);
  tabs_->setCurrentIndex(0);
  setMessage(QStringLiteral("Resuming %1").arg(runDir), false);
  Q_EMIT runStarted(runDir);
}

void TrainView::openRunFolder(const QString& dir) {
  dashboard_->follow(dir);
  // Show what the run was started with (its paths are relative to the original TRAIN.yaml, so the
  // form does not take the run folder as its file).
  QFile f(dir + QStringLiteral("/config.yaml"));
  if (f.open(QIODevice::ReadOnly)) {
    try {
      setForm(jobs::parseTrainForm(f.readAll().toStdString()));
    } catch (...) {
    }
  }
  // The log shows the run's label audit as it was when the run started.
  QFile audit(dir + QStringLiteral("/audit.txt"));
  if (!running() && audit.open(QIODevice::ReadOnly)) log_->setPlainText(QString::fromUtf8(audit.readAll()));
  tabs_->setCurrentIndex(0);
  setMessage(QStringLiteral("Following %1").arg(dir), false);
  updateButtons();
}

void TrainView::stop() {
  // Only our job: while it waits behind another one (a chat answer, an evolution), Stop leaves that alone.
  if (running() && runner_->currentName() == jobName_) {
    runner_->cancelCurrent();
    progressLabel_->setText(QStringLiteral("stopping (a checkpoint is written first)..."));
  } else if (running()) {
    setMessage(QStringLiteral("The run has not started yet (another job holds the device); it can be stopped once it runs."), true);
  }
}

void TrainView::chatVsBase() {
  const QString run = dashboard_->folder();
  const auto models = jobs::trainRunModels(run.toStdString());
  if (!models.finished) {
    setMessage(QStringLiteral("The run has not finished."), true);
    return;
  }
  if (!models.mergedDir.empty()) {
    Q_EMIT compareRequested(q(models.mergedDir), q(models.baseModel));
    return;
  }
  // Only an adapter: merge it into <run>/merged first (a job: it loads the base model).
  pendingCompare_ = run;
  const std::string dir = run.toStdString(), device = s(device_->currentText());
  enqueue(QStringLiteral("merge adapter %1").arg(QFileInfo(run).fileName()), QString(),
          [dir, device](ProgressReporter&, const std::atomic<bool>&) { jobs::mergeTrainedAdapter(dir, device); });
  setMessage(QStringLiteral("Merging the adapter into %1/merged for the comparison...").arg(run), false);
}

void TrainView::updateButtons() {
  const auto models = dashboard_->folder().isEmpty() ? jobs::TrainRunModels{} : jobs::trainRunModels(dashboard_->folder().toStdString());
  startButton_->setEnabled(!running());
  auditButton_->setEnabled(true);
  stopButton_->setEnabled(running());
  resumeButton_->setEnabled(!running() && models.resumable);
  compareButton_->setEnabled(!running() && models.finished && (!models.mergedDir.empty() || !models.adapterDir.empty()));
  // A followed run (this view's finished one, or another process's): the bar shows how far it got.
  if (!running() && models.steps > 0)
    progress_->setValue(static_cast<int>(1000 * std::min<int64_t>(std::max(dashboard_->lastStep(), models.step), models.steps) / models.steps));
}

}  // namespace kh
