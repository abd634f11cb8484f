// Runs view (see runs_view.h).
#include "widgets/runs_view.h"

#include <QBrush>
#include <QDateTime>
#include <QDesktopServices>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QPushButton>
#include <QSettings>
#include <QTableView>
#include <QTimer>
#include <QUrl>
#include <QVBoxLayout>

namespace kh {

RunsModel::RunsModel(QObject* parent) : QAbstractTableModel(parent) {}

int RunsModel::rowCount(const QModelIndex& p) const { return p.isValid() ? 0 : static_cast<int>(rows_.size()); }
int RunsModel::columnCount(const QModelIndex& p) const { return p.isValid() ? 0 : ColumnCount; }

QVariant RunsModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return QAbstractTableModel::headerData(section, o, role);
  static const char* names[] = {"Kind", "Name", "Status", "Best", "Started", "Duration"};
  return section >= 0 && section < ColumnCount ? QString::fromLatin1(names[section]) : QVariant();
}

QVariant RunsModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= rowCount() || index.column() >= ColumnCount) return {};
  const auto& r = rows_[static_cast<size_t>(index.row())];
  if (role == Qt::ToolTipRole) return QString::fromStdString(r.dir + (r.error.empty() ? "" : "\n" + r.error));
  if (role == Qt::ForegroundRole && index.column() == Status) {
    if (r.status == "failed") return QBrush(QColor(170, 40, 40));
    if (r.status == "running") return QBrush(QColor(20, 90, 180));
    return {};
  }
  if (role != Qt::DisplayRole) return {};
  switch (index.column()) {
    case Kind: return QString::fromStdString(r.kind);
    case Name: return QString::fromStdString(r.name);
    case Status: return QString::fromStdString(r.status);
    case Best: return r.hasBest ? QString::number(r.best, 'g', 5) : QString();
    case Started:
      return r.started ? QDateTime::fromSecsSinceEpoch(r.started).toString(QStringLiteral("yyyy-MM-dd hh:mm")) : QString();
    case Duration: {
      const int s = static_cast<int>(r.durationSeconds);
      return QStringLiteral("%1:%2:%3").arg(s / 3600).arg(s / 60 % 60, 2, 10, QLatin1Char('0')).arg(s % 60, 2, 10, QLatin1Char('0'));
    }
    default: return {};
  }
}

void RunsModel::setRoot(const QString& root) {
  root_ = root;
  refresh();
}

void RunsModel::addFolder(const QString& dir) {
  const QString d = QDir::cleanPath(QFileInfo(dir).absoluteFilePath());
  if (!extra_.contains(d)) extra_ << d;
  refresh();
}

void RunsModel::refresh() {
  QStringList dirs;
  for (const auto& d : jobs::listRunFolders(root_.toStdString()))
    dirs << QDir::cleanPath(QFileInfo(QString::fromStdString(d)).absoluteFilePath());
  for (const auto& d : extra_)
    if (!dirs.contains(d)) dirs << d;
  std::vector<jobs::RunInfo> rows;
  for (const auto& d : dirs) rows.push_back(jobs::readRunInfo(d.toStdString()));
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.started > b.started; });
  beginResetModel();
  rows_ = std::move(rows);
  endResetModel();
}

QString RunsModel::dirAt(int row) const {
  return row >= 0 && row < rowCount() ? QString::fromStdString(rows_[static_cast<size_t>(row)].dir) : QString();
}
const jobs::RunInfo* RunsModel::infoAt(int row) const {
  return row >= 0 && row < rowCount() ? &rows_[static_cast<size_t>(row)] : nullptr;
}

RunsView::RunsView(QWidget* parent) : QWidget(parent) {
  model_ = new RunsModel(this);
  QSettings s;
  model_->setRoot(s.value(QStringLiteral("runs/root"), QStringLiteral("runs")).toString());
  root_ = new QLineEdit(model_->root(), this);
  auto* browse = new QPushButton(QStringLiteral("Root..."), this);
  auto* refresh = new QPushButton(QStringLiteral("Refresh"), this);
  auto* add = new QPushButton(QStringLiteral("Add folder..."), this);
  auto* open = new QPushButton(QStringLiteral("Open"), this);
  auto* resume = new QPushButton(QStringLiteral("Resume"), this);
  auto* reveal = new QPushButton(QStringLiteral("Reveal folder"), this);
  auto* top = new QHBoxLayout;
  top->addWidget(new QLabel(QStringLiteral("Runs root:"), this));
  top->addWidget(root_, 1);
  top->addWidget(browse);
  top->addWidget(refresh);
  top->addWidget(add);
  table_ = new QTableView(this);
  table_->setModel(model_);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setSelectionMode(QAbstractItemView::SingleSelection);
  table_->horizontalHeader()->setSectionResizeMode(RunsModel::Name, QHeaderView::Stretch);
  table_->verticalHeader()->hide();
  auto* bottom = new QHBoxLayout;
  bottom->addStretch();
  bottom->addWidget(open);
  bottom->addWidget(resume);
  bottom->addWidget(reveal);
  auto* lay = new QVBoxLayout(this);
  lay->addLayout(top);
  lay->addWidget(table_, 1);
  lay->addLayout(bottom);

  auto applyRoot = [this] {
    model_->setRoot(root_->text());
    QSettings().setValue(QStringLiteral("runs/root"), root_->text());
  };
  connect(root_, &QLineEdit::editingFinished, this, applyRoot);
  connect(browse, &QPushButton::clicked, this, [this, applyRoot] {
    const QString d = QFileDialog::getExistingDirectory(this, QStringLiteral("Runs root"), root_->text());
    if (d.isEmpty()) return;
    root_->setText(d);
    applyRoot();
  });
  connect(refresh, &QPushButton::clicked, model_, &RunsModel::refresh);
  connect(add, &QPushButton::clicked, this, [this] {
    const QString d = QFileDialog::getExistingDirectory(this, QStringLiteral("Add a run folder"), root_->text());
    if (!d.isEmpty()) model_->addFolder(d);
  });
  connect(open, &QPushButton::clicked, this, [this] {
    if (!selected().isEmpty()) Q_EMIT openRequested(selected());
  });
  connect(table_, &QTableView::doubleClicked, this, [this] {
    if (!selected().isEmpty()) Q_EMIT openRequested(selected());
  });
  connect(resume, &QPushButton::clicked, this, [this] {
    const auto* info = model_->infoAt(table_->currentIndex().row());
    if (!info) return;
    if ((info->kind != "evolve" && info->kind != "train") || info->status == "running" || info->status == "finished") {
      QMessageBox::information(this, QStringLiteral("Resume"),
                               QStringLiteral("Only a stopped or failed evolution or training run can be resumed (this one is %1 %2).")
                                   .arg(QString::fromStdString(info->status), QString::fromStdString(info->kind)));
      return;
    }
    Q_EMIT resumeRequested(selected());
  });
  connect(reveal, &QPushButton::clicked, this, [this] {
    if (!selected().isEmpty()) QDesktopServices::openUrl(QUrl::fromLocalFile(selected()));
  });
  auto* timer = new QTimer(this);  // statuses change while runs go on
  timer->setInterval(5000);
  connect(timer, &QTimer::timeout, this, [this] {
    if (isVisible()) {
      const QString keep = selected();
      model_->refresh();
      for (int r = 0; r < model_->rowCount(); ++r)
        if (model_->dirAt(r) == keep) table_->selectRow(r);
    }
  });
  timer->start();
}

QString RunsView::selected() const { return model_->dirAt(table_->currentIndex().row()); }

}  // namespace kh
