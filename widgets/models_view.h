// Models view: the library of local model folders (add by folder picker or by dropping a folder),
// what inspect knows about the selected one, the memory it needs on the chosen device, and which
// others it can merge with. No torch headers here.
#pragma once

#include <QWidget>

class QListView;
class QPlainTextEdit;
class QComboBox;

namespace kh {

class ModelLibrary;

class ModelsView : public QWidget {
  Q_OBJECT
 public:
  explicit ModelsView(ModelLibrary* library, QWidget* parent = nullptr);
  ModelLibrary* library() const { return library_; }
  QListView* list() const { return list_; }
  QString detailsText() const;

 public Q_SLOTS:
  void addModelDialog();
  void removeSelected();

 protected:
  void dragEnterEvent(QDragEnterEvent* e) override;
  void dropEvent(QDropEvent* e) override;

 private:
  void showSelected();
  ModelLibrary* library_;
  QListView* list_;
  QPlainTextEdit* details_;
  QComboBox* device_;
};

}  // namespace kh
