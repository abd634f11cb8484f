// QtTest for the workbench: item models (QAbstractItemModelTester), the job runner's promise that
// the UI thread never stalls, the EVOLVE.yaml form round trip, a tiny evolution started from the
// Evolve view (points appear, cancel leaves a resumable folder), the dashboard following a
// metrics.jsonl that is still being written, and every view rendering. `kh_gui_tests CLASS` runs one.
#include <QAbstractItemModelTester>
#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QImage>
#include <QListView>
#include <QSet>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTimer>
#include <QtTest>
#include <fstream>

#include "core/jobs/jobs.h"
#include "tests/gui/test_main.h"
#include "tests/gui/tiny_models.h"
#include "widgets/evolve_dashboard.h"
#include "widgets/qcp.h"
#include "widgets/evolve_view.h"
#include "widgets/job_runner.h"
#include "widgets/main_window.h"
#include "widgets/merge_view.h"
#include "widgets/models_view.h"
#include <QDropEvent>
#include <QMimeData>
#include <QSettings>
#include <QUrl>
#include <QPlainTextEdit>
#include "widgets/model_library.h"
#include "widgets/runs_view.h"
#include "core/jobs/chat_engine.h"
#include "widgets/chat/chat_column.h"
#include "widgets/chat/chat_pane.h"
#include "widgets/chat/chat_controls.h"

namespace {

void writeText(const QString& path, const QString& text, bool append = false) {
  QFile f(path);
  QVERIFY(f.open(append ? QIODevice::Append : (QIODevice::WriteOnly | QIODevice::Truncate)));
  f.write(text.toUtf8());
}

QString candidateLine(int gen, int idx, double fitness) {
  return QStringLiteral("{\"type\":\"candidate\",\"generation\":%1,\"index\":%2,\"genome\":[0.5,0.5],"
                        "\"decoded\":{\"a\":{\"weight\":[0.5,0.25]},\"b\":{\"weight\":[0.5,0.75]}},\"fitness\":%3}\n")
      .arg(gen)
      .arg(idx)
      .arg(fitness);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
class TestItemModels : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void modelLibrary() {
    QTemporaryDir tmp;
    const QString a = tmp.filePath("a"), b = tmp.filePath("b"), g = tmp.filePath("g"), junk = tmp.filePath("junk");
    kh::guitest::makeTinyModel(a.toStdString(), "llama", 1);
    kh::guitest::makeTinyModel(b.toStdString(), "llama", 2);
    kh::guitest::makeTinyModel(g.toStdString(), "gpt2", 3);
    QDir().mkpath(junk);
    writeText(junk + "/README.txt", "not a model");
    kh::ModelLibrary lib(nullptr, false);
    QAbstractItemModelTester tester(&lib, QAbstractItemModelTester::FailureReportingMode::QtTest);
    QSignalSpy spy(&lib, &kh::ModelLibrary::inspected);
    for (const auto& d : {a, b, g, junk}) lib.addFolder(d);
    lib.addFolder(a);  // already there
    QCOMPARE(lib.rowCount(), 4);
    QTRY_VERIFY_WITH_TIMEOUT(lib.ready(0) && lib.ready(1) && lib.ready(2) && lib.ready(3), 10000);
    QVERIFY(lib.details(0).contains("Parameters") || lib.details(0).contains("LlamaForCausalLM"));
    QVERIFY(lib.details(0).contains("Memory needed"));
    QVERIFY(lib.details(3).contains("not a model"));
    QVERIFY(!lib.error(3).isEmpty());
    lib.setReference(0);
    QVERIFY(!lib.data(lib.index(0), kh::ModelLibrary::MergeableRole).toBool());  // itself
    QVERIFY(lib.data(lib.index(1), kh::ModelLibrary::MergeableRole).toBool());   // another llama, same shapes
    QVERIFY(!lib.data(lib.index(2), kh::ModelLibrary::MergeableRole).toBool());  // gpt2
    QVERIFY(!lib.data(lib.index(3), kh::ModelLibrary::MergeableRole).toBool());  // junk
    lib.removeRow(1);
    QCOMPARE(lib.rowCount(), 3);
  }

  // Folders persist across restarts (QSettings); dropping a folder on the Models view adds it.
  void persistAndDrop() {
    QSettings().remove("models/folders");
    QTemporaryDir tmp;
    const QString a = tmp.filePath("a");
    kh::guitest::makeTinyModel(a.toStdString(), "llama", 1, 2);
    {
      kh::ModelLibrary lib(nullptr, true);
      kh::ModelsView view(&lib);
      view.show();
      QMimeData mime;
      mime.setUrls({QUrl::fromLocalFile(a), QUrl::fromLocalFile(tmp.filePath("missing"))});
      QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
      QApplication::sendEvent(&view, &enter);
      QVERIFY(enter.isAccepted());
      QDropEvent drop(QPointF(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
      QApplication::sendEvent(&view, &drop);
      QCOMPARE(lib.rowCount(), 1);
      QTRY_VERIFY_WITH_TIMEOUT(lib.ready(0), 10000);
      view.list()->setCurrentIndex(lib.index(0));
      QVERIFY(view.detailsText().contains("Memory needed"));
    }
    kh::ModelLibrary again(nullptr, true);
    QCOMPARE(again.folders(), QStringList{QDir::cleanPath(a)});
    QTRY_VERIFY_WITH_TIMEOUT(again.ready(0), 10000);
    QSettings().remove("models/folders");
  }

  void runsModel() {
    QTemporaryDir tmp;
    const QString root = tmp.filePath("runs");
    QDir().mkpath(root + "/evolve-x-1");
    writeText(root + "/evolve-x-1/metrics.jsonl",
              candidateLine(0, 0, -1.0) + "{\"type\":\"generation\",\"generation\":0,\"best\":-1.0,\"mean\":-1.0}\n");
    QDir().mkpath(root + "/merge-y-2");
    writeText(root + "/merge-y-2/error.txt", "boom: the merge failed\n");
    QDir().mkpath(root + "/not-a-run");
    kh::RunsModel m;
    QAbstractItemModelTester tester(&m, QAbstractItemModelTester::FailureReportingMode::QtTest);
    m.setRoot(root);
    QCOMPARE(m.rowCount(), 2);
    QStringList statuses;
    for (int r = 0; r < m.rowCount(); ++r) statuses << m.data(m.index(r, kh::RunsModel::Status)).toString();
    QVERIFY(statuses.contains("failed"));
    for (int r = 0; r < m.rowCount(); ++r)
      if (m.data(m.index(r, kh::RunsModel::Kind)).toString() == "evolve")
        QCOMPARE(m.data(m.index(r, kh::RunsModel::Best)).toString(), QString("-1"));
    m.refresh();
    QCOMPARE(m.rowCount(), 2);
  }
};

// ---------------------------------------------------------------------------------------------------
class TestJobRunner : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  // A job that busy-loops ~1 s (reporting progress as fast as it can) must not stall the UI thread:
  // a 5 ms QTimer keeps firing with gaps under 50 ms. A real stall fails every time; the machine this
  // runs on is shared (2 cores, other builds), so a scheduler hiccup gets two more tries.
  void uiNeverStalls() {
    qint64 gap = 0;
    int progress = 0;
    for (int attempt = 0; attempt < 3; ++attempt) {
      measure(gap, progress);
      if (gap < 50) break;
      qWarning("attempt %d: UI timer gap %lld ms", attempt + 1, static_cast<long long>(gap));
    }
    QVERIFY2(gap < 50, qPrintable(QString("UI timer gap %1 ms").arg(gap)));
    // Throttled to ~20 Hz: about 20 in one second, not thousands.
    QVERIFY2(progress >= 5 && progress <= 30, qPrintable(QString::number(progress)));
  }

 private:
  void measure(qint64& maxGap, int& progressSignals) {
    kh::JobRunner runner;
    progressSignals = 0;
    maxGap = 0;
    connect(&runner, &kh::JobRunner::jobProgress, this, [&] { ++progressSignals; });
    QSignalSpy finished(&runner, &kh::JobRunner::jobFinished);
    QElapsedTimer clock;
    qint64 last = -1;
    QTimer tick;
    tick.setInterval(5);
    connect(&tick, &QTimer::timeout, this, [&] {
      const qint64 now = clock.elapsed();
      if (last >= 0) maxGap = std::max(maxGap, now - last);
      last = now;
    });
    runner.enqueue({"busy", {}, [](kh::ProgressReporter& r, const std::atomic<bool>& cancel) {
                      QElapsedTimer t;
                      t.start();
                      volatile double x = 0;
                      while (t.elapsed() < 1000 && !cancel) {
                        for (int i = 0; i < 1000; ++i) x = x + i;
                        r.progress(t.elapsed() / 1000.0, "busy");
                      }
                    }});
    clock.start();
    tick.start();
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, 5000);
    tick.stop();
    QVERIFY(finished.at(0).at(1).toBool());
  }

 private Q_SLOTS:
  void failedJobMessageAndErrorFile() {
    QTemporaryDir tmp;
    kh::JobRunner runner;
    QSignalSpy finished(&runner, &kh::JobRunner::jobFinished);
    const QString dir = tmp.filePath("run");
    runner.enqueue({"fails", dir, [](kh::ProgressReporter&, const std::atomic<bool>&) {
                      throw std::runtime_error("model.safetensors: truncated");
                    }});
    // FIFO: the second job runs after the first.
    runner.enqueue({"ok", {}, [](kh::ProgressReporter&, const std::atomic<bool>&) {}});
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 2, 5000);
    QCOMPARE(finished.at(0).at(1).toBool(), false);
    QCOMPARE(finished.at(0).at(2).toString(), QString("model.safetensors: truncated"));
    QCOMPARE(finished.at(1).at(1).toBool(), true);
    QFile f(dir + "/error.txt");
    QVERIFY(f.open(QIODevice::ReadOnly));
    QVERIFY(f.readAll().contains("truncated"));
  }

  void cancel() {
    kh::JobRunner runner;
    QSignalSpy started(&runner, &kh::JobRunner::jobStarted);
    QSignalSpy finished(&runner, &kh::JobRunner::jobFinished);
    runner.enqueue({"forever", {}, [](kh::ProgressReporter&, const std::atomic<bool>& cancel) {
                      while (!cancel) QThread::msleep(1);
                      throw std::runtime_error("cancelled");
                    }});
    QTRY_COMPARE_WITH_TIMEOUT(started.count(), 1, 5000);
    runner.enqueue({"queued", {}, [](kh::ProgressReporter&, const std::atomic<bool>&) {}});
    runner.cancelCurrent();  // the running one
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 2, 5000);
    QCOMPARE(finished.at(0).at(2).toString(), QString("cancelled"));
    QVERIFY(finished.at(1).at(1).toBool());  // the queued one ran after it
    QVERIFY(!runner.busy());
    // Cancel pressed right after enqueue (before the worker picks the job up, or just after) is
    // never lost: the job either is dropped or sees the flag.
    for (int i = 0; i < 20; ++i) {
      runner.enqueue({"late", {}, [](kh::ProgressReporter&, const std::atomic<bool>& cancel) {
                        QElapsedTimer t;
                        t.start();
                        while (!cancel && t.elapsed() < 3000) QThread::msleep(1);
                        if (!cancel) throw std::runtime_error("cancel was lost");
                        throw std::runtime_error("cancelled");
                      }});
      runner.cancelCurrent();
      QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 3 + i, 5000);
      QCOMPARE(finished.last().at(2).toString(), QString("cancelled"));
    }
  }
};

// ---------------------------------------------------------------------------------------------------
class TestEvolveForm : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void roundTrip() {
    QTemporaryDir tmp;
    kh::jobs::EvolveForm f;
    f.method = "dare_ties";
    f.baseModel = "base";
    f.models = {"a", "b", "c"};
    f.layerGranularity = 2;
    f.filters = {"self_attn", "mlp"};
    f.dtype = "float32";
    f.suite = "suites/ja-arith";
    f.seed = 42;
    f.population = 12;
    f.generations = 7;
    f.maxEvaluations = 100;
    f.device = "cpu";
    QCOMPARE(kh::jobs::parseEvolveForm(kh::jobs::evolveFormToYaml(f)), f);

    kh::JobRunner runner;
    kh::EvolveView v1(&runner);
    v1.setForm(f);
    QVERIFY(v1.form() == f);
    const QString path = tmp.filePath("EVOLVE.yaml");
    QVERIFY(v1.saveConfig(path));
    kh::EvolveView v2(&runner);
    QVERIFY(v2.loadConfig(path));
    QVERIFY(v2.form() == f);
    // A file written by hand (the README's) loads, and saving it keeps its meaning.
    writeText(path, "merge_method: linear\nmodels: [a, b]\nlayer_granularity: 2\ndtype: float32\n"
                    "fitness: {target: target, sequences: 8, length: 32}\nsearch: {seed: 3, generations: 30}\n");
    QVERIFY(v2.loadConfig(path));
    const auto loaded = v2.form();
    QCOMPARE(loaded.target, std::string("target"));
    QCOMPARE(loaded.generations, 30);
    QVERIFY(v2.saveConfig(path));
    QVERIFY(v2.loadConfig(path));
    QVERIFY(v2.form() == loaded);
    // Running an unchanged hand-written file keeps it as written (comments and all).
    const QString commented = "# my search\nmerge_method: linear\nmodels: [a, b]\n";
    writeText(path, commented);
    QVERIFY(v2.loadConfig(path));
    QVERIFY(v2.startRun().isEmpty());  // refused (no models on disk), but the file must be untouched
    QFile check(path);
    QVERIFY(check.open(QIODevice::ReadOnly));
    QCOMPARE(QString::fromUtf8(check.readAll()), commented);
    QVERIFY2(v2.message().contains("missing 'fitness'"), qPrintable(v2.message()));
    // A bad file is a message, not a crash.
    writeText(path, "merge_method: linear\nbogus_key: 1\n");
    QVERIFY(!v2.loadConfig(path));
    QVERIFY(v2.message().contains("bogus_key"));
  }
};

// ---------------------------------------------------------------------------------------------------
class TestEvolveRun : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void pointsAppearAndCancelLeavesResumableRun() {
    QTemporaryDir tmp;
    kh::guitest::makeTinyModel(tmp.filePath("a").toStdString(), "llama", 1, 2);
    kh::guitest::makeTinyModel(tmp.filePath("b").toStdString(), "llama", 2, 2);
    kh::MainWindow w(nullptr, false);
    auto* view = w.evolveView();
    view->setRunsRoot(tmp.filePath("runs"));
    kh::jobs::EvolveForm f;
    f.models = {"a", "b"};
    f.dtype = "float32";
    f.target = "a";
    f.sequences = 2;
    f.length = 8;
    f.generations = 200;
    f.seed = 1;
    QVERIFY(view->saveConfig(tmp.filePath("EVOLVE.yaml")));
    view->setForm(f);
    QSignalSpy finished(w.runner(), &kh::JobRunner::jobFinished);
    const QString runDir = view->startRun();
    QVERIFY2(!runDir.isEmpty(), qPrintable(view->message()));
    // Candidates appear on the plot while the run goes on.
    QTRY_VERIFY_WITH_TIMEOUT(view->dashboard()->plottedPoints() >= 3, 20000);
    QVERIFY(!view->dashboard()->candidateText(0).isEmpty());
    w.cancelJob();
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, 10000);
    QCOMPARE(finished.at(0).at(2).toString(), QString("cancelled"));
    QVERIFY2(view->logText().contains("memory plan"), qPrintable(view->logText()));
    QVERIFY(view->logText().contains("cancelled"));
    QVERIFY(w.jobText().contains("cancelled"));
    QVERIFY(QFile::exists(runDir + "/state.json"));
    QVERIFY(!QFile::exists(runDir + "/error.txt"));
    const auto info = kh::jobs::readRunInfo(runDir.toStdString());
    QVERIFY(info.status == "stopped" || info.status == "running");
    // Resume as a job: it runs (more candidates), and cancels cleanly again.
    const int before = view->dashboard()->plottedPoints();
    QSignalSpy started(w.runner(), &kh::JobRunner::jobStarted);
    view->resumeRun(runDir);
    QTRY_COMPARE_WITH_TIMEOUT(started.count(), 1, 10000);
    QTRY_VERIFY_WITH_TIMEOUT(view->dashboard()->plottedPoints() > before, 20000);
    w.cancelJob();
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 2, 10000);
    QCOMPARE(finished.at(1).at(2).toString(), QString("cancelled"));
  }
};

// ---------------------------------------------------------------------------------------------------
class TestDashboardFollow : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void followsAppends() {
    QTemporaryDir tmp;
    const QString dir = tmp.filePath("run"), metrics = dir + "/metrics.jsonl";
    QDir().mkpath(dir);
    writeText(metrics, candidateLine(0, 0, -3) + candidateLine(0, 1, -2) + candidateLine(0, 2, -2.5));
    kh::EvolveDashboard d;
    d.follow(dir);
    QCOMPARE(d.plottedPoints(), 3);
    // Another process appends: two candidates, a generation line, and half of the next line.
    writeText(metrics,
              candidateLine(0, 3, -1.5) + "{\"type\":\"generation\",\"generation\":0,\"best\":-1.5,\"mean\":-2.2,"
                                          "\"heldout_best\":-1.7}\n" +
                  candidateLine(1, 0, -1.0) + "{\"type\":\"cand",
              true);
    QTRY_COMPARE_WITH_TIMEOUT(d.plottedPoints(), 5, 3000);  // watcher or poll timer
    QCOMPARE(d.generationCount(), 1);
    writeText(metrics, "idate\",\"generation\":1,\"index\":1,\"fitness\":-0.5}\n", true);
    QTRY_COMPARE_WITH_TIMEOUT(d.plottedPoints(), 6, 3000);
    QVERIFY(d.lastError().isEmpty());
    // A corrupt line is reported, not a crash; later lines still arrive.
    writeText(metrics, "this is not json\n" + candidateLine(1, 2, -0.4), true);
    QTRY_COMPARE_WITH_TIMEOUT(d.plottedPoints(), 7, 3000);
    QVERIFY(!d.lastError().isEmpty());
    QVERIFY(d.candidateText(6).contains("weight"));
    // Clicking a point shows that candidate's decoded recipe.
    d.resize(1000, 600);
    d.show();
    QVERIFY(QTest::qWaitForWindowExposed(&d));
    d.plot()->replot();
    const QPoint at(qRound(d.plot()->xAxis->coordToPixel(6)), qRound(d.plot()->yAxis->coordToPixel(-0.4)));
    QTest::mouseClick(d.plot(), Qt::LeftButton, Qt::NoModifier, at);
    QVERIFY2(d.panelText().startsWith("generation 1, candidate 2"), qPrintable(d.panelText()));
    // Exports.
    QVERIFY(d.exportPng(tmp.filePath("p.png")));
    QVERIFY(d.exportPdf(tmp.filePath("p.pdf")));
    QVERIFY(d.exportCsv(tmp.filePath("p.csv")));
    QFile csv(tmp.filePath("p.csv"));
    QVERIFY(csv.open(QIODevice::ReadOnly));
    QVERIFY(csv.readAll().count('\n') >= 8);
    // A resumed run truncates the file: the dashboard starts over.
    writeText(metrics, candidateLine(0, 0, -3));
    QTRY_COMPARE_WITH_TIMEOUT(d.plottedPoints(), 1, 3000);
  }

  void readMetricsOffsets() {
    QTemporaryDir tmp;
    const QString p = tmp.filePath("m.jsonl");
    writeText(p, "{\"a\":1}\n{\"a\":2}\n{\"a\"");
    auto c = kh::jobs::readMetrics(p.toStdString(), 0);
    QCOMPARE(c.lines.size(), size_t(2));
    QCOMPARE(c.nextOffset, uint64_t(16));
    auto c2 = kh::jobs::readMetrics(p.toStdString(), c.nextOffset);
    QCOMPARE(c2.lines.size(), size_t(0));
    QCOMPARE(c2.nextOffset, uint64_t(16));
    auto missing = kh::jobs::readMetrics(tmp.filePath("none").toStdString(), 0);
    QVERIFY(missing.lines.empty() && missing.errors.empty());
  }
};

// ---------------------------------------------------------------------------------------------------
class TestScreenshots : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void everyViewRenders() {
    QTemporaryDir tmp;
    const QString run = tmp.filePath("run");
    QDir().mkpath(run);
    QString lines;
    for (int g = 0; g < 3; ++g) {
      for (int i = 0; i < 4; ++i) lines += candidateLine(g, i, -3.0 + g + 0.1 * i);
      lines += QStringLiteral("{\"type\":\"generation\",\"generation\":%1,\"best\":%2,\"mean\":%3,\"heldout_best\":%4}\n")
                   .arg(g)
                   .arg(-2.7 + g)
                   .arg(-2.85 + g)
                   .arg(-2.9 + g);
    }
    writeText(run + "/metrics.jsonl", lines);
    kh::MainWindow w(nullptr, false);
    w.evolveView()->openRunFolder(run);
    const QString out = tmp.filePath("shots");
    QVERIFY(w.saveScreenshots(out));
    for (const auto& name : kh::MainWindow::viewNames()) {
      QImage img(out + "/" + name + ".png");
      QVERIFY2(!img.isNull(), qPrintable(name));
      QSet<QRgb> colors;
      for (int y = 0; y < img.height(); y += 3)
        for (int x = 0; x < img.width(); x += 3) colors.insert(img.pixel(x, y));
      QVERIFY2(colors.size() > 8, qPrintable(QString("%1: %2 colors").arg(name).arg(colors.size())));
    }
    // Shortcuts switch views.
    QTest::keyClick(&w, Qt::Key_4, Qt::ControlModifier);
    QCOMPARE(w.currentView(), int(kh::MainWindow::Runs));
    // Opening a run from the Runs view shows it in the Evolve dashboard.
    w.runsView()->model()->addFolder(run);
    QVERIFY(w.runsView()->model()->rowCount() >= 1);
    Q_EMIT w.runsView()->openRequested(run);
    QCOMPARE(w.currentView(), int(kh::MainWindow::Evolve));
    QCOMPARE(w.evolveView()->dashboard()->folder(), run);
    QCOMPARE(w.evolveView()->dashboard()->plottedPoints(), 12);
  }
};

// ---------------------------------------------------------------------------------------------------
// The status bar's Cancel (and Esc / Ctrl+.) stops a chat answer running on the device's job runner,
// as the chat's own Stop does: the answer ends "cancelled", kept as far as it got, and the runner
// is free again.
class TestChatCancel : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void statusBarCancelStopsAChatAnswer() {
    QTemporaryDir tmp;
    const std::string dir = tmp.filePath("llama").toStdString();
    kh::guitest::makeTinyModel(dir, "llama", 2, 2, /*withTokenizer=*/true);
    kh::MainWindow w(nullptr, false);
    auto* pane = w.chatPage()->findChild<kh::gui::ChatPane*>();
    QVERIFY(pane);
    pane->setEngine(kh::ChatEngine::load(dir, "cpu"));
    pane->column()->setStreamIntervalMs(0);
    kh::ChatSettings s;
    s.maxNewTokens = 3000;
    s.temperature = 0.8;
    s.seed = 5;
    pane->settingsBox()->setSettings(s);
    QSignalSpy done(pane->column(), &kh::gui::ChatColumn::replyFinished);
    QSignalSpy finished(w.runner(), &kh::JobRunner::jobFinished);
    bool cancelled = false;
    connect(pane->column(), &kh::gui::ChatColumn::chunkArrived, &w, [&] {
      if (cancelled) return;
      cancelled = true;
      QCOMPARE(w.runner()->currentName(), QStringLiteral("chat answer"));
      w.cancelJob();
    });
    pane->input()->setPlainText(QStringLiteral("長い話をしてください。"));
    pane->send();
    QVERIFY(done.wait(30000));
    QVERIFY(cancelled);
    QCOMPARE(done.at(0).at(0).toString(), QStringLiteral("cancelled"));
    const auto& answer = pane->column()->entries().back();
    QVERIFY(answer.stats.newTokens < 3000);
    QTRY_VERIFY_WITH_TIMEOUT(!w.runner()->busy(), 10000);
  }
};

// ---------------------------------------------------------------------------------------------------
class TestMergeView : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void planAndErrorLine() {
    QTemporaryDir tmp;
    kh::guitest::makeTinyModel(tmp.filePath("a").toStdString(), "llama", 1, 2);
    kh::guitest::makeTinyModel(tmp.filePath("b").toStdString(), "llama", 2, 2);
    kh::MainWindow w(nullptr, false);
    auto* v = w.mergeView();
    v->setBaseDir(tmp.path());
    v->editor()->setPlainText("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: 0.5\n"
                              "  - model: b\n    parameters:\n      weight: 0.5\ndtype: float32\n");
    QVERIFY(v->plan());
    QVERIFY(!v->planText().isEmpty());
    QCOMPARE(v->errorLine(), 0);
    v->editor()->setPlainText("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: 0.5\n"
                              "  - model: b\n    parameters:\n      wieght: 0.5\n");
    QVERIFY(!v->plan());
    QVERIFY2(v->errorLine() == 8, qPrintable(QString::number(v->errorLine())));
    QVERIFY(v->editor()->extraSelections().size() == 1);  // the line is highlighted
  // Run: a merge job writes the folder.
    v->editor()->setPlainText("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: 0.5\n"
                              "  - model: b\n    parameters:\n      weight: 0.5\ndtype: float32\n");
    v->setOutDir(tmp.filePath("merged"));
    QSignalSpy finished(w.runner(), &kh::JobRunner::jobFinished);
    v->run();
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, 20000);
    QVERIFY2(finished.at(0).at(1).toBool(), qPrintable(finished.at(0).at(2).toString()));
    QVERIFY(QFile::exists(tmp.filePath("merged/config.json")));
  }
};

int main(int argc, char** argv) {
  return kh::guitest::runTestClasses(argc, argv, "kh_gui_tests",
                                      {[] { return static_cast<QObject*>(new TestItemModels); },
                                       [] { return static_cast<QObject*>(new TestJobRunner); },
                                       [] { return static_cast<QObject*>(new TestEvolveForm); },
                                       [] { return static_cast<QObject*>(new TestEvolveRun); },
                                       [] { return static_cast<QObject*>(new TestDashboardFollow); },
                                       [] { return static_cast<QObject*>(new TestMergeView); },
                                       [] { return static_cast<QObject*>(new TestScreenshots); },
                                       [] { return static_cast<QObject*>(new TestChatCancel); }});
}

#include "gui_tests.moc"
