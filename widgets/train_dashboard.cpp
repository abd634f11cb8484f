// Training dashboard (see train_dashboard.h).
#include "widgets/train_dashboard.h"
#include "widgets/metrics_follow.h"

#include "widgets/qcp.h"

#include <QFileInfo>
#include <QFileSystemWatcher>
#include <QHBoxLayout>
#include <QLabel>
#include <QPainter>
#include <QPushButton>
#include <QSplitter>
#include <QTimer>
#include <QVBoxLayout>

#include "core/jobs/jobs.h"

namespace kh {

namespace {
QCustomPlot* makePlot(QWidget* parent, const QString& y) {
  auto* p = new QCustomPlot(parent);
  p->setMinimumSize(280, 140);
  p->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
  p->xAxis->setLabel(QStringLiteral("step"));
  p->yAxis->setLabel(y);
  p->legend->setVisible(true);
  p->legend->setFont(QFont(parent->font().family(), 8));
  return p;
}
QCPGraph* addCurve(QCustomPlot* p, const QString& name, const QColor& c, bool dots, QCPAxis* y = nullptr) {
  auto* g = p->addGraph(p->xAxis, y ? y : p->yAxis);
  g->setName(name);
  g->setPen(QPen(c, 1.8));
  if (dots) g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, c, 6));
  return g;
}
double num(const nlohmann::json& l, const char* key) { return l[key].get<double>(); }
bool has(const nlohmann::json& l, const char* key) { return l.contains(key) && l[key].is_number(); }
}  // namespace

TrainDashboard::TrainDashboard(QWidget* parent) : QWidget(parent) {
  title_ = new QLabel(QStringLiteral("No training run followed. Start one or open a run folder."), this);
  loss_ = makePlot(this, QStringLiteral("loss (cross-entropy)"));
  addCurve(loss_, QStringLiteral("train loss"), QColor(60, 90, 200), false);
  addCurve(loss_, QStringLiteral("eval loss"), QColor(200, 60, 30), true);
  lr_ = makePlot(this, QStringLiteral("learning rate"));
  addCurve(lr_, QStringLiteral("learning rate"), QColor(40, 140, 70), false);
  lr_->legend->setVisible(false);
  stop_ = makePlot(this, QStringLiteral("stop-rate (held-out)"));
  stop_->yAxis2->setVisible(true);
  stop_->yAxis2->setLabel(QStringLiteral("answer length (tokens)"));
  addCurve(stop_, QStringLiteral("stop-rate"), QColor(200, 60, 30), true);
  auto* gen = addCurve(stop_, QStringLiteral("generated length"), QColor(90, 90, 90), true, stop_->yAxis2);
  gen->setPen(QPen(QColor(90, 90, 90), 1.5, Qt::DashLine));
  auto* ref = addCurve(stop_, QStringLiteral("reference length"), QColor(150, 150, 150), false, stop_->yAxis2);
  ref->setPen(QPen(QColor(150, 150, 150), 1.2, Qt::DotLine));
  stop_->yAxis->setRange(0, 1.05);
  stop_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignBottom | Qt::AlignRight);  // rates sit near 1

  auto* fit = new QPushButton(QStringLiteral("Fit"), this);
  auto* bar = new QHBoxLayout;
  bar->addWidget(title_, 1);
  bar->addWidget(fit);
  auto* bottom = new QSplitter(this);
  bottom->addWidget(lr_);
  bottom->addWidget(stop_);
  auto* split = new QSplitter(Qt::Vertical, this);
  split->addWidget(loss_);
  split->addWidget(bottom);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 2);
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  lay->addLayout(bar);
  lay->addWidget(split, 1);

  watcher_ = new QFileSystemWatcher(this);
  connect(watcher_, &QFileSystemWatcher::fileChanged, this, [this] { poll(); });
  connect(watcher_, &QFileSystemWatcher::directoryChanged, this, [this] { poll(); });
  timer_ = new QTimer(this);
  timer_->setInterval(500);
  connect(timer_, &QTimer::timeout, this, &TrainDashboard::poll);
  connect(fit, &QPushButton::clicked, this, [this] {
    rescale();
    replotAll();
  });
}

void TrainDashboard::follow(const QString& dir) {
  if (!watcher_->files().isEmpty()) watcher_->removePaths(watcher_->files());
  if (!watcher_->directories().isEmpty()) watcher_->removePaths(watcher_->directories());
  dir_ = dir;
  offset_ = 0;
  clear();
  if (dir.isEmpty()) {
    timer_->stop();
    title_->setText(QStringLiteral("No training run followed."));
    return;
  }
  title_->setText(QStringLiteral("Following %1").arg(dir));
  if (QFileInfo(dir).isDir()) watcher_->addPath(dir);
  timer_->start();
  poll();
}

void TrainDashboard::clear() {
  for (auto* p : {loss_, lr_, stop_})
    for (int i = 0; i < p->graphCount(); ++i) p->graph(i)->data()->clear();
  lastStep_ = 0;
  lastLoss_ = lastTps_ = lastStopRate_ = 0;
  hasEval_ = false;
  lastError_.clear();
  replotAll();
}

void TrainDashboard::poll() {
  if (!followMetrics(dir_, watcher_, offset_, lastError_, [this] { clear(); }, [this](const nlohmann::json& l) { add(l); }))
    return;
  rescale();
  replotAll();
  title_->setText(QStringLiteral("%1: step %2, loss %3%4")
                      .arg(QFileInfo(dir_).fileName())
                      .arg(lastStep_)
                      .arg(lastLoss_, 0, 'f', 4)
                      .arg(hasEval_ ? QStringLiteral(", stop-rate %1").arg(lastStopRate_, 0, 'f', 2) : QString()));
  Q_EMIT updated();
}

// Train lines: {"step", "loss", "lr", "tokens_per_s"}; eval lines: {"step", "eval_loss", "stop_rate",
// "generated_tokens", "reference_tokens"} (core/train/trainer.cpp).
void TrainDashboard::add(const nlohmann::json& l) {
  if (!l.is_object() || !has(l, "step")) return;
  const double step = num(l, "step");
  if (has(l, "eval_loss")) {
    loss_->graph(1)->addData(step, num(l, "eval_loss"));
    if (has(l, "stop_rate")) {
      lastStopRate_ = num(l, "stop_rate");
      hasEval_ = true;
      stop_->graph(0)->addData(step, lastStopRate_);
    }
    if (has(l, "generated_tokens")) stop_->graph(1)->addData(step, num(l, "generated_tokens"));
    if (has(l, "reference_tokens")) stop_->graph(2)->addData(step, num(l, "reference_tokens"));
  } else if (has(l, "loss")) {
    lastStep_ = static_cast<int64_t>(step);
    lastLoss_ = num(l, "loss");
    loss_->graph(0)->addData(step, lastLoss_);
    if (has(l, "lr")) lr_->graph(0)->addData(step, num(l, "lr"));
    if (has(l, "tokens_per_s")) lastTps_ = num(l, "tokens_per_s");
  }
}

void TrainDashboard::rescale() {
  for (auto* p : {loss_, lr_}) {
    p->rescaleAxes();
    p->yAxis->scaleRange(1.1, p->yAxis->range().center());
  }
  stop_->rescaleAxes();
  stop_->yAxis->setRange(-0.02, 1.05);
  stop_->yAxis2->setRangeLower(0);
  stop_->xAxis->setRange(loss_->xAxis->range());
}

void TrainDashboard::replotAll() {
  for (auto* p : {loss_, lr_, stop_}) p->replot(QCustomPlot::rpQueuedReplot);
}

int TrainDashboard::trainPoints() const { return loss_->graph(0)->dataCount(); }
int TrainDashboard::evalPoints() const { return loss_->graph(1)->dataCount(); }
int TrainDashboard::lrPoints() const { return lr_->graph(0)->dataCount(); }
int TrainDashboard::stopRatePoints() const { return stop_->graph(0)->dataCount(); }

bool TrainDashboard::exportPng(const QString& path) {
  const QPixmap a = loss_->toPixmap(1200, 500), b = lr_->toPixmap(600, 350), c = stop_->toPixmap(600, 350);
  QPixmap all(1200, 850);
  all.fill(Qt::white);
  QPainter p(&all);
  p.drawPixmap(0, 0, a);
  p.drawPixmap(0, 500, b);
  p.drawPixmap(600, 500, c);
  p.end();
  return all.save(path);
}

}  // namespace kh
