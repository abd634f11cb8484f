// Merge view (see merge_view.h).
#include "widgets/merge_view.h"

#include <QComboBox>
#include <QDir>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFontDatabase>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSplitter>
#include <QTextBlock>
#include <QVBoxLayout>

#include "core/jobs/jobs.h"
#include "widgets/job_runner.h"

namespace kh {

MergeView::MergeView(JobRunner* runner, QWidget* parent) : QWidget(parent), runner_(runner) {
  editor_ = new QPlainTextEdit(this);
  editor_->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  editor_->setPlainText(QStringLiteral(
      "# A mergekit recipe. Model paths are relative to the folder below.\n"
      "merge_method: linear\nmodels:\n  - model: model-a\n    parameters:\n      weight: 0.5\n"
      "  - model: model-b\n    parameters:\n      weight: 0.5\ndtype: bfloat16\n"));
  plan_ = new QPlainTextEdit(this);
  plan_->setReadOnly(true);
  plan_->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  plan_->setPlaceholderText(QStringLiteral("Memory plan: press Plan."));
  baseDir_ = new QLineEdit(QDir::currentPath(), this);
  outDir_ = new QLineEdit(QDir::current().filePath(QStringLiteral("merged")), this);
  device_ = new QComboBox(this);
  for (const auto& d : jobs::availableDevices()) device_->addItem(QString::fromStdString(d));
  message_ = new QLabel(this);
  message_->setWordWrap(true);
  message_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  auto* load = new QPushButton(QStringLiteral("Load recipe..."), this);
  auto* planB = new QPushButton(QStringLiteral("Plan memory"), this);
  auto* runB = new QPushButton(QStringLiteral("Run merge"), this);
  auto* form = new QFormLayout;
  form->addRow(QStringLiteral("Models relative to"), baseDir_);
  form->addRow(QStringLiteral("Output folder"), outDir_);
  form->addRow(QStringLiteral("Device"), device_);
  auto* buttons = new QHBoxLayout;
  buttons->addWidget(load);
  buttons->addStretch();
  buttons->addWidget(planB);
  buttons->addWidget(runB);
  auto* split = new QSplitter(Qt::Vertical, this);
  split->addWidget(editor_);
  split->addWidget(plan_);
  split->setStretchFactor(0, 3);
  auto* lay = new QVBoxLayout(this);
  lay->addLayout(form);
  lay->addWidget(split, 1);
  lay->addWidget(message_);
  lay->addLayout(buttons);
  connect(load, &QPushButton::clicked, this, &MergeView::loadDialog);
  connect(planB, &QPushButton::clicked, this, &MergeView::plan);
  connect(runB, &QPushButton::clicked, this, &MergeView::run);
  connect(editor_, &QPlainTextEdit::textChanged, this, [this] {
    if (errorLine_) showError({}, 0);
  });
}

void MergeView::setBaseDir(const QString& dir) { baseDir_->setText(dir); }
void MergeView::setOutDir(const QString& dir) { outDir_->setText(dir); }

QString MergeView::planText() const { return plan_->toPlainText(); }

void MergeView::showError(const QString& message, int line) {
  errorLine_ = line;
  message_->setText(message);
  message_->setStyleSheet(message.isEmpty() ? QString() : QStringLiteral("color: #a02020;"));
  QList<QTextEdit::ExtraSelection> sel;
  if (line > 0) {
    QTextEdit::ExtraSelection s;
    s.format.setBackground(QColor(255, 215, 215));
    s.format.setProperty(QTextFormat::FullWidthSelection, true);
    s.cursor = QTextCursor(editor_->document()->findBlockByNumber(line - 1));
    sel << s;
    editor_->setTextCursor(s.cursor);
  }
  editor_->setExtraSelections(sel);
}

bool MergeView::plan() {
  try {
    plan_->setPlainText(QString::fromStdString(jobs::planMergeText(editor_->toPlainText().toStdString(),
                                                                    baseDir_->text().toStdString(),
                                                                    device_->currentText().toStdString())));
    showError({}, 0);
    return true;
  } catch (...) {
    const auto e = jobs::recipeErrorOf(jobs::jobMessage(std::current_exception()));
    showError(QString::fromStdString(e.message), e.line);
    return false;
  }
}

void MergeView::run() {
  if (!plan()) return;
  const std::string yaml = editor_->toPlainText().toStdString(), base = baseDir_->text().toStdString(),
                    out = outDir_->text().toStdString(), dev = device_->currentText().toStdString();
  runner_->enqueue({QStringLiteral("merge into %1").arg(QFileInfo(outDir_->text()).fileName()), {},
                    [=](ProgressReporter& r, const std::atomic<bool>& cancel) {
                      jobs::runMergeText(yaml, base, out, dev, [&r](double f, const std::string& t) { r.progress(f, t); },
                                         &cancel);
                    }});
  message_->setText(QStringLiteral("Merge queued into %1").arg(outDir_->text()));
}

void MergeView::loadDialog() {
  const QString p = QFileDialog::getOpenFileName(this, QStringLiteral("Load a recipe"), {}, QStringLiteral("YAML (*.yaml *.yml)"));
  if (p.isEmpty()) return;
  QFile f(p);
  if (!f.open(QIODevice::ReadOnly)) return;
  editor_->setPlainText(QString::fromUtf8(f.readAll()));
  baseDir_->setText(QFileInfo(p).absolutePath());
}

}  // namespace kh
