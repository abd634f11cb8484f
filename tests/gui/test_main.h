// The main() of a GUI test binary holding several QtTest classes: `BINARY ClassName [QtTest
// arguments]` runs one class (CTest has one entry per class), no argument runs them all.
#pragma once

#include <QApplication>
#include <QStandardPaths>
#include <QStringList>
#include <QtTest>

#include <functional>
#include <memory>
#include <vector>

namespace kh::guitest {

inline int runTestClasses(int argc, char** argv, const char* appName,
                          const std::vector<std::function<QObject*()>>& classes) {
  QApplication app(argc, argv);
  QApplication::setOrganizationName("KumihimoTest");
  QApplication::setApplicationName(appName);
  QStandardPaths::setTestModeEnabled(true);
  const QString only = argc > 1 ? QString::fromLocal8Bit(argv[1]) : QString();
  QStringList args{QString::fromLocal8Bit(argv[0])};
  for (int i = 2; i < argc; ++i) args << QString::fromLocal8Bit(argv[i]);
  int status = 0;
  for (const auto& make : classes) {
    std::unique_ptr<QObject> t(make());
    if (only.isEmpty() || only == QString::fromLatin1(t->metaObject()->className())) status |= QTest::qExec(t.get(), args);
  }
  return status;
}

}  // namespace kh::guitest
