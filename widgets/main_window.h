// The workbench's main window. For now a shell that names the product and its state; the views
// (models, merge, evolve, runs, chat) arrive with the workbench issue. No torch headers here.
#pragma once

#include <QMainWindow>

namespace kh {

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(QWidget* parent = nullptr);
};

}  // namespace kh
