// The library of local model folders: a list model (one row per folder) that inspects each folder
// off the UI thread, remembers the folders in QSettings, and marks which rows can merge with a chosen
// one (same architecture and tensor shapes). No torch headers here.
#pragma once

#include <QAbstractListModel>
#include <QStringList>
#include <vector>

#include "core/jobs/jobs.h"

namespace kh {

class ModelLibrary : public QAbstractListModel {
  Q_OBJECT
 public:
  enum Roles { PathRole = Qt::UserRole + 1, StateRole, MergeableRole, DetailsRole };
  explicit ModelLibrary(QObject* parent = nullptr, bool persist = true);

  int rowCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;

  // Adds a folder (ignored when present) and inspects it in the background.
  void addFolder(const QString& dir);
  void removeRow(int row);
  QStringList folders() const;
  // The row whose merge partners are marked (-1 none).
  void setReference(int row);
  void setDevice(const QString& device);
  QString device() const { return device_; }
  bool ready(int row) const;  // inspected (or failed)
  QString details(int row) const;
  QString error(int row) const;

 Q_SIGNALS:
  void inspected(int row);

 private:
  struct Entry {
    QString dir;
    enum { Pending, Ok, Failed } state = Pending;
    jobs::ModelInfo info;
    QString error;
    int generation = 0;
  };
  void inspect(int row);
  void save() const;
  std::vector<Entry> rows_;
  int reference_ = -1;
  QString device_ = QStringLiteral("cpu");
  bool persist_;
};

}  // namespace kh
