// Evolution dashboard (see evolve_dashboard.h).
#include "widgets/evolve_dashboard.h"
#include "widgets/metrics_follow.h"

#include "widgets/qcp.h"

#include <QFileDialog>
#include <QFileInfo>
#include <QFileSystemWatcher>
#include <QFontDatabase>
#include <QHBoxLayout>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSplitter>
#include <QTextStream>
#include <QTimer>
#include <QToolTip>
#include <QVBoxLayout>
#include <cmath>

#include "core/jobs/jobs.h"

namespace kh {

EvolveDashboard::EvolveDashboard(QWidget* parent) : QWidget(parent) {
  title_ = new QLabel(QStringLiteral("No run folder followed. Run an evolution or open a run folder."), this);
  plot_ = new QCustomPlot(this);
  plot_->setMinimumSize(320, 220);
  plot_->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom | QCP::iSelectPlottables);
  plot_->xAxis->setLabel(QStringLiteral("evaluation"));
  plot_->yAxis->setLabel(QStringLiteral("fitness (higher is better)"));
  plot_->legend->setVisible(true);
  plot_->legend->setFont(QFont(font().family(), 8));
  auto* cand = plot_->addGraph();
  cand->setName(QStringLiteral("candidates"));
  cand->setLineStyle(QCPGraph::lsNone);
  cand->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, QColor(90, 120, 200, 150), 5));
  auto* best = plot_->addGraph();
  best->setName(QStringLiteral("best of generation"));
  best->setPen(QPen(QColor(200, 60, 30), 2));
  best->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, 6));
  auto* mean = plot_->addGraph();
  mean->setName(QStringLiteral("mean of generation"));
  mean->setPen(QPen(QColor(110, 110, 110), 1.5, Qt::DashLine));
  auto* held = plot_->addGraph();
  held->setName(QStringLiteral("held-out of the best"));
  held->setPen(QPen(QColor(30, 150, 70), 2));
  held->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssTriangle, 6));

  heat_ = new QCustomPlot(this);
  heat_->setMinimumSize(240, 160);
  heat_->xAxis->setLabel(QStringLiteral("layer group"));
  heat_->yAxis->setLabel(QStringLiteral("model"));
  map_ = new QCPColorMap(heat_->xAxis, heat_->yAxis);
  scale_ = new QCPColorScale(heat_);
  heat_->plotLayout()->addElement(0, 1, scale_);
  map_->setColorScale(scale_);
  map_->setGradient(QCPColorGradient::gpThermal);
  map_->setInterpolate(false);
  heat_->plotLayout()->insertRow(0);
  heat_->plotLayout()->addElement(0, 0, new QCPTextElement(heat_, QStringLiteral("best candidate's weights"), 9));

  panel_ = new QPlainTextEdit(this);
  panel_->setReadOnly(true);
  panel_->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  panel_->setPlaceholderText(QStringLiteral("Hover or click a candidate to see its decoded recipe."));

  auto* exportButton = new QPushButton(QStringLiteral("Export..."), this);
  auto* resetZoom = new QPushButton(QStringLiteral("Fit"), this);
  auto* bar = new QHBoxLayout;
  bar->addWidget(title_, 1);
  bar->addWidget(resetZoom);
  bar->addWidget(exportButton);

  auto* right = new QSplitter(Qt::Vertical, this);
  right->addWidget(heat_);
  right->addWidget(panel_);
  auto* split = new QSplitter(this);
  split->addWidget(plot_);
  split->addWidget(right);
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
  connect(timer_, &QTimer::timeout, this, &EvolveDashboard::poll);
  connect(exportButton, &QPushButton::clicked, this, &EvolveDashboard::exportDialog);
  connect(resetZoom, &QPushButton::clicked, this, [this] {
    plot_->rescaleAxes();
    plot_->replot();
  });
  connect(plot_, &QCustomPlot::mouseMove, this, [this](QMouseEvent* e) { onHover(e, false); });
  connect(plot_, &QCustomPlot::mousePress, this, [this](QMouseEvent* e) { onHover(e, true); });
}

void EvolveDashboard::follow(const QString& dir) {
  if (!watcher_->files().isEmpty()) watcher_->removePaths(watcher_->files());
  if (!watcher_->directories().isEmpty()) watcher_->removePaths(watcher_->directories());
  dir_ = dir;
  offset_ = 0;
  clear();
  if (dir.isEmpty()) {
    timer_->stop();
    title_->setText(QStringLiteral("No run folder followed."));
    return;
  }
  title_->setText(QStringLiteral("Following %1").arg(dir));
  if (QFileInfo(dir).isDir()) watcher_->addPath(dir);
  const QString metrics = dir + QStringLiteral("/metrics.jsonl");
  if (QFileInfo::exists(metrics)) watcher_->addPath(metrics);
  timer_->start();
  poll();
}

void EvolveDashboard::clear() {
  candidates_.clear();
  generations_.clear();
  bestCandidate_ = -1;
  lastError_.clear();
  rebuild();
}

void EvolveDashboard::poll() {
  if (!followMetrics(dir_, watcher_, offset_, lastError_, [this] { clear(); }, [this](const nlohmann::json& l) { add(l); }))
    return;
  rebuild();
  Q_EMIT updated();
}

void EvolveDashboard::add(const nlohmann::json& l) {
  if (!l.is_object()) return;
  const std::string type = l.value("type", "");
  if (type == "candidate") {
    Candidate c;
    c.generation = l.value("generation", 0);
    c.index = l.value("index", 0);
    c.x = static_cast<double>(candidates_.size());
    if (l.contains("fitness") && l["fitness"].is_number()) {
      c.hasFitness = true;
      c.fitness = l["fitness"].get<double>();
    }
    if (l.contains("decoded")) c.decoded = l["decoded"];
    if (l.contains("genome")) c.genome = l["genome"];
    candidates_.push_back(std::move(c));
    const auto& n = candidates_.back();
    if (n.hasFitness && (bestCandidate_ < 0 || n.fitness > candidates_[static_cast<size_t>(bestCandidate_)].fitness))
      bestCandidate_ = static_cast<int>(candidates_.size()) - 1;
  } else if (type == "generation") {
    Generation g;
    g.generation = l.value("generation", 0);
    g.x = candidates_.empty() ? 0 : candidates_.back().x;
    if (l.contains("best") && l["best"].is_number()) {
      g.hasBest = true;
      g.best = l["best"].get<double>();
    }
    if (l.contains("mean") && l["mean"].is_number()) g.mean = l["mean"].get<double>();
    if (l.contains("heldout_best") && l["heldout_best"].is_number()) {
      g.hasHeldout = true;
      g.heldout = l["heldout_best"].get<double>();
    }
    generations_.push_back(g);
  }
}

int EvolveDashboard::plottedPoints() const { return plot_->graph(0)->dataCount(); }

void EvolveDashboard::rebuild() {
  QVector<double> cx, cy, gx, gb, gm, hx, hy;
  for (const auto& c : candidates_)
    if (c.hasFitness) {
      cx << c.x;
      cy << c.fitness;
    }
  for (const auto& g : generations_) {
    if (g.hasBest) {
      gx << g.x;
      gb << g.best;
      gm << g.mean;
    }
    if (g.hasHeldout) {
      hx << g.x;
      hy << g.heldout;
    }
  }
  plot_->graph(0)->setData(cx, cy, true);
  plot_->graph(1)->setData(gx, gb, true);
  plot_->graph(2)->setData(gx, gm, true);
  plot_->graph(3)->setData(hx, hy, true);
  if (!cx.isEmpty()) {
    plot_->rescaleAxes();
    plot_->yAxis->scaleRange(1.08, plot_->yAxis->range().center());
    plot_->xAxis->scaleRange(1.04, plot_->xAxis->range().center());
  }
  plot_->replot(QCustomPlot::rpQueuedReplot);
  updateHeatMap();
  if (!dir_.isEmpty())
    title_->setText(QStringLiteral("%1: %2 candidates, %3 generations%4")
                        .arg(QFileInfo(dir_).fileName())
                        .arg(candidates_.size())
                        .arg(generations_.size())
                        .arg(bestCandidate_ >= 0 ? QStringLiteral(", best %1").arg(candidates_[static_cast<size_t>(bestCandidate_)].fitness, 0, 'g', 5)
                                                 : QString()));
}

// Rows: one per model (per model/filter when filters are evolved; "t" for slerp); columns: layer groups.
void EvolveDashboard::updateHeatMap() {
  std::vector<std::pair<std::string, std::vector<double>>> rows;
  if (bestCandidate_ >= 0) {
    const auto& d = candidates_[static_cast<size_t>(bestCandidate_)].decoded;
    auto addRows = [&](const std::string& label, const nlohmann::json& v) {
      if (v.is_array()) {
        std::vector<double> r;
        for (const auto& x : v) r.push_back(x.is_number() ? x.get<double>() : 0.0);
        rows.emplace_back(label, r);
      } else if (v.is_object()) {
        for (auto it = v.begin(); it != v.end(); ++it)
          if (it.value().is_array()) {
            std::vector<double> r;
            for (const auto& x : it.value()) r.push_back(x.is_number() ? x.get<double>() : 0.0);
            rows.emplace_back(label + "/" + it.key(), r);
          }
      }
    };
    if (d.is_object())
      for (auto it = d.begin(); it != d.end(); ++it) {
        if (it.key() == "t") addRows("t", it.value());
        else if (it.value().is_object() && it.value().contains("weight"))
          addRows(QFileInfo(QString::fromStdString(it.key())).fileName().toStdString(), it.value()["weight"]);
      }
  }
  int cols = 0;
  for (const auto& r : rows) cols = std::max(cols, static_cast<int>(r.second.size()));
  const int nrows = static_cast<int>(rows.size());
  if (nrows == 0 || cols == 0) {
    map_->data()->setSize(1, 1);
    map_->data()->setRange(QCPRange(0, 0), QCPRange(0, 0));
    map_->data()->setCell(0, 0, 0);
    heat_->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  map_->data()->setSize(cols, nrows);
  map_->data()->setRange(QCPRange(0, std::max(cols - 1, 0)), QCPRange(0, std::max(nrows - 1, 0)));
  auto ticker = QSharedPointer<QCPAxisTickerText>::create();
  for (int r = 0; r < nrows; ++r) {
    ticker->addTick(r, QString::fromStdString(rows[static_cast<size_t>(r)].first));
    for (int c = 0; c < cols; ++c) {
      const auto& v = rows[static_cast<size_t>(r)].second;
      map_->data()->setCell(c, r, c < static_cast<int>(v.size()) ? v[static_cast<size_t>(c)] : 0.0);
    }
  }
  heat_->yAxis->setTicker(ticker);
  auto groups = QSharedPointer<QCPAxisTickerFixed>::create();
  groups->setTickStep(1.0);
  groups->setScaleStrategy(QCPAxisTickerFixed::ssMultiples);
  heat_->xAxis->setTicker(groups);
  map_->rescaleDataRange(true);
  heat_->xAxis->setRange(-0.5, cols - 0.5);
  heat_->yAxis->setRange(-0.5, nrows - 0.5);
  heat_->replot(QCustomPlot::rpQueuedReplot);
}

QString EvolveDashboard::candidateText(int i) const {
  if (i < 0 || i >= candidateCount()) return {};
  const auto& c = candidates_[static_cast<size_t>(i)];
  QString s = QStringLiteral("generation %1, candidate %2 (evaluation %3)\nfitness: %4\n\n")
                  .arg(c.generation)
                  .arg(c.index)
                  .arg(static_cast<int>(c.x))
                  .arg(c.hasFitness ? QString::number(c.fitness, 'g', 6) : QStringLiteral("failed"));
  return s + QString::fromStdString(c.decoded.dump(2));
}

void EvolveDashboard::showCandidate(int i) { panel_->setPlainText(candidateText(i)); }
QString EvolveDashboard::panelText() const { return panel_->toPlainText(); }

void EvolveDashboard::onHover(QMouseEvent* e, bool click) {
  int bestI = -1;
  double bestD = 12 * 12;  // pixels squared
  const QPointF pos = e->position();
  for (size_t i = 0; i < candidates_.size(); ++i) {
    if (!candidates_[i].hasFitness) continue;
    const double px = plot_->xAxis->coordToPixel(candidates_[i].x), py = plot_->yAxis->coordToPixel(candidates_[i].fitness);
    const double d = (px - pos.x()) * (px - pos.x()) + (py - pos.y()) * (py - pos.y());
    if (d < bestD) {
      bestD = d;
      bestI = static_cast<int>(i);
    }
  }
  if (bestI < 0) {
    if (!click) QToolTip::hideText();
    return;
  }
  const auto& c = candidates_[static_cast<size_t>(bestI)];
  QToolTip::showText(plot_->mapToGlobal(pos.toPoint()),
                     QStringLiteral("gen %1 #%2: %3").arg(c.generation).arg(c.index).arg(c.fitness, 0, 'g', 5), plot_);
  showCandidate(bestI);
}

bool EvolveDashboard::exportPng(const QString& path) { return plot_->savePng(path, 1200, 800); }
bool EvolveDashboard::exportPdf(const QString& path) { return plot_->savePdf(path, 1200, 800); }

bool EvolveDashboard::exportCsv(const QString& path) const {
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate | QIODevice::Text)) return false;
  QTextStream out(&f);
  out << "evaluation,generation,index,fitness,genome\n";
  for (const auto& c : candidates_) {
    QString genome;
    if (c.genome.is_array())
      for (const auto& g : c.genome) genome += (genome.isEmpty() ? "" : " ") + QString::number(g.get<double>(), 'g', 8);
    out << static_cast<int>(c.x) << "," << c.generation << "," << c.index << ","
        << (c.hasFitness ? QString::number(c.fitness, 'g', 10) : QString()) << ",\"" << genome << "\"\n";
  }
  out << "\ngeneration,best,mean,heldout_best\n";
  for (const auto& g : generations_)
    out << g.generation << "," << (g.hasBest ? QString::number(g.best, 'g', 10) : QString()) << ","
        << QString::number(g.mean, 'g', 10) << "," << (g.hasHeldout ? QString::number(g.heldout, 'g', 10) : QString())
        << "\n";
  return true;
}

void EvolveDashboard::exportDialog() {
  QString filter;
  const QString path = QFileDialog::getSaveFileName(this, QStringLiteral("Export the dashboard"), QStringLiteral("evolution.png"),
                                                    QStringLiteral("PNG image (*.png);;PDF (*.pdf);;CSV (*.csv)"), &filter);
  if (path.isEmpty()) return;
  if (path.endsWith(QStringLiteral(".pdf"), Qt::CaseInsensitive)) exportPdf(path);
  else if (path.endsWith(QStringLiteral(".csv"), Qt::CaseInsensitive)) exportCsv(path);
  else exportPng(path);
}

}  // namespace kh
