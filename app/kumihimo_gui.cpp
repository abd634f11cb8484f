// kumihimo: the Qt6 workbench. A thin main: everything lives in libkumihimo_widgets.
#include <QApplication>

#include "widgets/main_window.h"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("Kumihimo"));
  QApplication::setApplicationVersion(QStringLiteral(KH_VERSION));
  kh::MainWindow w;
  w.show();
  return QApplication::exec();
}
