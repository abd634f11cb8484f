// kumihimo: the Qt6 workbench. A thin main: everything lives in libkumihimo_widgets.
//   kumihimo                                   the workbench
//   kumihimo --evolve CONFIG [--run-dir DIR]   opens the Evolve view with CONFIG and starts it
//   kumihimo --open-run RUN                    follows a run folder (one a CLI run still writes, too)
//   kumihimo --screenshot DIR                  renders every view to DIR/<view>.png and exits
#include <QApplication>
#include <QCommandLineParser>
#include <QTimer>
#include <cstdio>

#include "app/thread_waits.h"
#include "widgets/evolve_view.h"
#include "widgets/main_window.h"
#include "widgets/runs_view.h"

int main(int argc, char** argv) {
  kh::app::restartWithShortThreadSpins(argv);
  QApplication app(argc, argv);
  QApplication::setOrganizationName(QStringLiteral("Kumihimo"));
  QApplication::setApplicationName(QStringLiteral("Kumihimo"));
  QApplication::setApplicationVersion(QStringLiteral(KH_VERSION));
  QCommandLineParser p;
  p.setApplicationDescription(QStringLiteral("Kumihimo: a research workbench for LLM merging and evolution"));
  p.addHelpOption();
  p.addVersionOption();
  QCommandLineOption evolve(QStringLiteral("evolve"), QStringLiteral("Open the Evolve view with CONFIG and start it."),
                            QStringLiteral("CONFIG"));
  QCommandLineOption runDir(QStringLiteral("run-dir"), QStringLiteral("Run folder for --evolve."), QStringLiteral("DIR"));
  QCommandLineOption shot(QStringLiteral("screenshot"), QStringLiteral("Render each view to DIR/<view>.png and exit."),
                          QStringLiteral("DIR"));
  QCommandLineOption openRun(QStringLiteral("open-run"), QStringLiteral("Follow a run folder (Evolve dashboard, or the Train view for a training run)."),
                             QStringLiteral("RUN"));
  p.addOptions({evolve, runDir, shot, openRun});
  p.process(app);

  kh::MainWindow w;
  if (p.isSet(openRun)) {
    w.openRun(p.value(openRun));  // Train view for a training run, else the Evolve dashboard
  }
  if (p.isSet(shot)) {
    w.show();
    const bool ok = w.saveScreenshots(p.value(shot));
    std::fprintf(ok ? stdout : stderr, "%s %s\n", ok ? "wrote screenshots to" : "could not write screenshots to",
                 p.value(shot).toLocal8Bit().constData());
    return ok ? 0 : 1;
  }
  w.show();
  if (p.isSet(evolve)) {
    w.showView(kh::MainWindow::Evolve);
    if (!w.evolveView()->loadConfig(p.value(evolve))) {
      std::fprintf(stderr, "%s\n", w.evolveView()->message().toLocal8Bit().constData());
    } else {
      QTimer::singleShot(0, &w, [&] {
        if (w.evolveView()->startRun(p.value(runDir)).isEmpty())
          std::fprintf(stderr, "%s\n", w.evolveView()->message().toLocal8Bit().constData());
      });
    }
  }
  return QApplication::exec();
}
