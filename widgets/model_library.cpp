// Model library list model (see model_library.h).
#include "widgets/model_library.h"

#include <QBrush>
#include <QCoreApplication>
#include <QColor>
#include <QDir>
#include <QFileInfo>
#include <QPointer>
#include <QSettings>
#include <QThreadPool>

namespace kh {

ModelLibrary::ModelLibrary(QObject* parent, bool persist) : QAbstractListModel(parent), persist_(persist) {
  if (!persist_) return;
  QSettings s;
  for (const auto& d : s.value(QStringLiteral("models/folders")).toStringList()) addFolder(d);
}

int ModelLibrary::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : static_cast<int>(rows_.size());
}

QVariant ModelLibrary::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() < 0 || index.row() >= rowCount()) return {};
  const Entry& e = rows_[static_cast<size_t>(index.row())];
  const bool mergeable = reference_ >= 0 && reference_ != index.row() && e.state == Entry::Ok &&
                         rows_[static_cast<size_t>(reference_)].state == Entry::Ok &&
                         jobs::mergeIncompatibility(rows_[static_cast<size_t>(reference_)].info, e.info).empty();
  switch (role) {
    case Qt::DisplayRole: {
      QString name = QFileInfo(e.dir).fileName();
      if (e.state == Entry::Ok)
        name += QStringLiteral("  (%1, %2)")
                    .arg(QString::fromStdString(e.info.report.value("architecture", "")),
                         QString::fromStdString(jobs::formatBytes(e.info.report.value("size_on_disk", uint64_t{0}))));
      else if (e.state == Entry::Failed)
        name += QStringLiteral("  (not a model)");
      else
        name += QStringLiteral("  (inspecting...)");
      if (mergeable) name = QStringLiteral("\u2194 ") + name;  // ↔ can merge with the selection
      return name;
    }
    case Qt::ToolTipRole:
      return e.state == Entry::Failed ? e.dir + QStringLiteral("\n") + e.error : e.dir;
    case Qt::ForegroundRole:
      if (e.state == Entry::Failed) return QBrush(QColor(170, 40, 40));
      if (mergeable) return QBrush(QColor(20, 110, 40));
      return {};
    case PathRole:
      return e.dir;
    case StateRole:
      return static_cast<int>(e.state);
    case MergeableRole:
      return mergeable;
    case DetailsRole:
      return details(index.row());
    default:
      return {};
  }
}

void ModelLibrary::addFolder(const QString& dirIn) {
  const QString dir = QDir::cleanPath(QFileInfo(dirIn).absoluteFilePath());
  for (const auto& e : rows_)
    if (e.dir == dir) return;
  const int row = rowCount();
  beginInsertRows({}, row, row);
  Entry entry;
  entry.dir = dir;
  rows_.push_back(std::move(entry));
  endInsertRows();
  save();
  inspect(row);
}

void ModelLibrary::removeRow(int row) {
  if (row < 0 || row >= rowCount()) return;
  beginRemoveRows({}, row, row);
  rows_.erase(rows_.begin() + row);
  endRemoveRows();
  if (reference_ == row) reference_ = -1;
  else if (reference_ > row) --reference_;
  save();
  if (rowCount()) Q_EMIT dataChanged(index(0), index(rowCount() - 1));
}

QStringList ModelLibrary::folders() const {
  QStringList l;
  for (const auto& e : rows_) l << e.dir;
  return l;
}

void ModelLibrary::setReference(int row) {
  reference_ = row;
  if (rowCount()) Q_EMIT dataChanged(index(0), index(rowCount() - 1));
}

void ModelLibrary::setDevice(const QString& device) {
  if (device == device_) return;
  device_ = device;
  for (int r = 0; r < rowCount(); ++r) inspect(r);
}

bool ModelLibrary::ready(int row) const {
  return row >= 0 && row < rowCount() && rows_[static_cast<size_t>(row)].state != Entry::Pending;
}

QString ModelLibrary::details(int row) const {
  if (row < 0 || row >= rowCount()) return {};
  const Entry& e = rows_[static_cast<size_t>(row)];
  if (e.state == Entry::Pending) return QStringLiteral("Inspecting %1 ...").arg(e.dir);
  if (e.state == Entry::Failed) return QStringLiteral("%1 is not a model Kumihimo can read:\n%2").arg(e.dir, e.error);
  return QString::fromStdString(jobs::describeModel(e.info));
}

QString ModelLibrary::error(int row) const {
  return row >= 0 && row < rowCount() ? rows_[static_cast<size_t>(row)].error : QString();
}

// Inspection reads headers and JSON (and loads the tokenizer): quick, but off the UI thread anyway.
void ModelLibrary::inspect(int row) {
  Entry& e = rows_[static_cast<size_t>(row)];
  const int gen = ++e.generation;
  const std::string dir = e.dir.toStdString(), device = device_.toStdString();
  QPointer<ModelLibrary> self(this);
  QThreadPool::globalInstance()->start([self, dir, device, gen] {
    auto result = std::make_shared<std::pair<jobs::ModelInfo, std::string>>();
    try {
      result->first = jobs::inspectModelFolder(dir, device);
    } catch (...) {
      result->second = jobs::jobMessage(std::current_exception());
      if (result->second.empty()) result->second = "unreadable";
    }
    // Back on the UI thread through the application object (always alive); `self` is checked there.
    QMetaObject::invokeMethod(
        QCoreApplication::instance(),
        [self, dir, gen, result] {
          if (!self) return;
          for (int r = 0; r < self->rowCount(); ++r) {
            Entry& x = self->rows_[static_cast<size_t>(r)];
            if (x.dir.toStdString() != dir || x.generation != gen) continue;
            x.info = result->first;
            x.error = QString::fromStdString(result->second);
            x.state = result->second.empty() ? Entry::Ok : Entry::Failed;
            Q_EMIT self->dataChanged(self->index(0), self->index(self->rowCount() - 1));
            Q_EMIT self->inspected(r);
          }
        },
        Qt::QueuedConnection);
  });
}

void ModelLibrary::save() const {
  if (!persist_) return;
  QSettings s;
  s.setValue(QStringLiteral("models/folders"), folders());
}

}  // namespace kh
