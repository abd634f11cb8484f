// Main window shell (see main_window.h).
#include "widgets/main_window.h"

#include <QAction>
#include <QKeySequence>
#include <QLabel>
#include <QMenuBar>
#include <QStatusBar>

namespace kh {

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  setWindowTitle(QStringLiteral("Kumihimo"));
  auto* label = new QLabel(QStringLiteral("Kumihimo workbench\n\nUse kumihimo-cli inspect MODEL for now; "
                                          "the model library, merge, evolve and chat views come next."),
                           this);
  label->setAlignment(Qt::AlignCenter);
  setCentralWidget(label);
  auto* file = menuBar()->addMenu(QStringLiteral("&File"));
  auto* quit = file->addAction(QStringLiteral("&Quit"));
  quit->setShortcut(QKeySequence::Quit);
  connect(quit, &QAction::triggered, this, &QMainWindow::close);
  statusBar()->showMessage(QStringLiteral("Device: CPU"));
  resize(900, 600);
}

}  // namespace kh
