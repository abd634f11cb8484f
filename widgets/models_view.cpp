// Models view (see models_view.h).
#include "widgets/models_view.h"

#include <QComboBox>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QFontDatabase>
#include <QHBoxLayout>
#include <QLabel>
#include <QListView>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSplitter>
#include <QVBoxLayout>

#include "widgets/model_library.h"

namespace kh {

ModelsView::ModelsView(ModelLibrary* library, QWidget* parent) : QWidget(parent), library_(library) {
  setAcceptDrops(true);
  auto* add = new QPushButton(QStringLiteral("Add model folder..."), this);
  auto* remove = new QPushButton(QStringLiteral("Remove"), this);
  device_ = new QComboBox(this);
  for (const auto& d : jobs::availableDevices()) device_->addItem(QString::fromStdString(d));
  auto* top = new QHBoxLayout;
  top->addWidget(add);
  top->addWidget(remove);
  top->addStretch();
  top->addWidget(new QLabel(QStringLiteral("Memory on device:"), this));
  top->addWidget(device_);

  list_ = new QListView(this);
  list_->setModel(library_);
  details_ = new QPlainTextEdit(this);
  details_->setReadOnly(true);
  details_->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  details_->setPlaceholderText(QStringLiteral(
      "Add a model folder (Ctrl+O) or drop one here. Select a model to see its architecture, parameters, dtype, "
      "size, vocabulary, stop ids, chat template family and the memory it needs; models marked \u2194 can merge "
      "with it."));
  auto* split = new QSplitter(this);
  split->addWidget(list_);
  split->addWidget(details_);
  split->setStretchFactor(1, 2);
  auto* lay = new QVBoxLayout(this);
  lay->addLayout(top);
  lay->addWidget(split);

  connect(add, &QPushButton::clicked, this, &ModelsView::addModelDialog);
  connect(remove, &QPushButton::clicked, this, &ModelsView::removeSelected);
  connect(device_, &QComboBox::currentTextChanged, library_, &ModelLibrary::setDevice);
  connect(list_->selectionModel(), &QItemSelectionModel::currentChanged, this, [this] { showSelected(); });
  connect(library_, &ModelLibrary::inspected, this, [this](int row) {
    if (list_->currentIndex().row() == row) showSelected();
  });
}

QString ModelsView::detailsText() const { return details_->toPlainText(); }

void ModelsView::addModelDialog() {
  const QString dir = QFileDialog::getExistingDirectory(this, QStringLiteral("Add a model folder"));
  if (!dir.isEmpty()) library_->addFolder(dir);
}

void ModelsView::removeSelected() { library_->removeRow(list_->currentIndex().row()); }

void ModelsView::showSelected() {
  const int row = list_->currentIndex().row();
  library_->setReference(row);
  details_->setPlainText(library_->details(row));
}

void ModelsView::dragEnterEvent(QDragEnterEvent* e) {
  if (e->mimeData()->hasUrls()) e->acceptProposedAction();
}

void ModelsView::dropEvent(QDropEvent* e) {
  for (const auto& url : e->mimeData()->urls()) {
    const QString p = url.toLocalFile();
    if (QFileInfo(p).isDir()) library_->addFolder(p);
  }
  e->acceptProposedAction();
}

}  // namespace kh
