// Runs view: the history of run folders under a root (default ./runs) plus folders opened; kind,
// name, status (running / finished / stopped / failed, inferred from the folder), best score,
// start and duration. Open in the dashboard, resume a stopped evolution, reveal the folder.
#pragma once

#include <QAbstractTableModel>
#include <QStringList>
#include <QWidget>
#include <vector>

#include "core/jobs/jobs.h"

class QTableView;
class QLineEdit;

namespace kh {

class RunsModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { Kind, Name, Status, Best, Started, Duration, ColumnCount };
  explicit RunsModel(QObject* parent = nullptr);
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

  void setRoot(const QString& root);
  QString root() const { return root_; }
  void addFolder(const QString& dir);  // a folder opened from elsewhere
  void refresh();
  QString dirAt(int row) const;
  const jobs::RunInfo* infoAt(int row) const;

 private:
  QString root_ = QStringLiteral("runs");
  QStringList extra_;
  std::vector<jobs::RunInfo> rows_;
};

class RunsView : public QWidget {
  Q_OBJECT
 public:
  explicit RunsView(QWidget* parent = nullptr);
  RunsModel* model() const { return model_; }
  QTableView* table() const { return table_; }

 Q_SIGNALS:
  void openRequested(const QString& dir);
  void resumeRequested(const QString& dir);

 private:
  QString selected() const;
  RunsModel* model_;
  QTableView* table_;
  QLineEdit* root_;
};

}  // namespace kh
