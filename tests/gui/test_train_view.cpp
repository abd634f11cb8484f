// QtTest for the Train view: the TRAIN.yaml form round trip and its one-line errors with the line,
// the label audit of a config whose end-of-turn label is masked (share < 100%, red, Start refused),
// and a short real training run on a tiny model started from the view: the plots fill (the learning
// rate against the closed-form schedule), the audit equals the run's audit.txt, Stop / Resume, and
// "Chat vs base" opens the Compare tab with both models. `kh_train_gui_tests CLASS` runs one class.
#include <QApplication>
#include <QComboBox>
#include <QDir>
#include <QFile>
#include <QRegularExpression>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QtTest>
#include <cmath>

#include "core/jobs/chat_engine.h"
#include "core/jobs/jobs.h"
#include "core/jobs/train_jobs.h"
#include "tests/gui/test_main.h"
#include "tests/gui/tiny_models.h"
#include "widgets/chat/compare_pane.h"
#include "widgets/job_runner.h"
#include "widgets/main_window.h"
#include "widgets/qcp.h"
#include "widgets/runs_view.h"
#include "widgets/train_dashboard.h"
#include "widgets/train_view.h"

namespace {

void writeText(const QString& path, const QString& text) {
  QFile f(path);
  QVERIFY(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
  f.write(text.toUtf8());
}

QString readText(const QString& path) {
  QFile f(path);
  return f.open(QIODevice::ReadOnly) ? QString::fromUtf8(f.readAll()) : QString();
}

// n short conversations: "<a><b>の次は" -> "<a+1>です" (as the core training test uses).
QString numberData(int n) {
  const char* nums[] = {"一", "二", "三", "四", "五", "六", "七", "八", "九", "十"};
  QString data;
  for (int i = 0; i < n; ++i) {
    const QString q = QString::fromUtf8(nums[i % 10]) + QString::fromUtf8(nums[(i / 10) % 10]) + QString::fromUtf8("の次は");
    const QString a = QString::fromUtf8(nums[(i + 1) % 10]) + QString::fromUtf8("です");
    data += QStringLiteral("{\"messages\": [{\"role\": \"user\", \"content\": \"%1\"}, {\"role\": \"assistant\", \"content\": \"%2\"}]}\n")
                .arg(q, a);
  }
  return data;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
class TestTrainForm : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void roundTripAndErrors() {
    QTemporaryDir tmp;
    kh::jobs::TrainForm f;
    f.model = "models/base";
    f.data = "data/train.jsonl";
    f.evalData = "data/held.jsonl";
    f.evalSplit = 0.15;
    f.chatTemplate = "gemma";
    f.method = "lora";
    f.rank = 16;
    f.alpha = 32;
    f.dropout = 0.05;
    f.targetModules = "q_proj|k_proj|v_proj";
    f.rsLora = true;
    f.learningRate = 3e-5;
    f.weightDecay = 0.01;
    f.schedule = "linear";
    f.warmupSteps = 7;
    f.steps = 123;
    f.epochs = 2;
    f.batchSize = 3;
    f.gradAccum = 5;
    f.clipNorm = 0.5;
    f.seed = 1234567890123ULL;
    f.maxLength = 777;
    f.labels = "last_turn";
    f.maskEndOfTurn = true;
    f.allowUnterminated = true;
    f.evalEvery = 9;
    f.evalPrompts = 11;
    f.evalMaxNewTokens = 33;
    f.saveEvery = 13;
    f.gradientCheckpointing = true;
    f.dtype = "bf16";
    f.device = "cpu";
    f.exportMerged = false;
    f.mergedDtype = "bf16";
    f.extra = {{"future_option", "3"}};  // a key of a newer engine survives
    QVERIFY(kh::jobs::parseTrainForm(kh::jobs::trainFormToYaml(f)) == f);

    kh::JobRunner runner;
    kh::TrainView v1(&runner);
    v1.setForm(f);
    QVERIFY(v1.form() == f);
    const QString path = tmp.filePath("TRAIN.yaml");
    QVERIFY(v1.saveConfig(path));
    QVERIFY(!QFile::exists(path + ".partial"));
    kh::TrainView v2(&runner);
    QVERIFY2(v2.loadConfig(path), qPrintable(v2.message()));
    QVERIFY(v2.form() == f);

    // The bundled demo config, as written by hand, loads with its values.
    QVERIFY2(v2.loadConfig(QStringLiteral(KH_SOURCE_DIR "/resources/train/stop-demo.yaml")), qPrintable(v2.message()));
    const auto demo = v2.form();
    QCOMPARE(demo.model, std::string("../models/tiny-llm-jp-3"));
    QCOMPARE(demo.targetModules, std::string("q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"));
    QCOMPARE(demo.learningRate, 0.01);
    QCOMPARE(demo.steps, int64_t(60));
    QCOMPARE(demo.evalEvery, int64_t(20));
    QCOMPARE(demo.saveEvery, int64_t(20));
    // Its audit (the bundled tiny llm-jp-3 and its data) passes: every answer ends on </s>. (Saved
    // as a copy with absolute paths: the audit saves the form first, and the source tree stays as is.)
    auto copy = demo;
    copy.model = KH_SOURCE_DIR "/resources/models/tiny-llm-jp-3";
    copy.data = KH_SOURCE_DIR "/resources/train/stop-demo.jsonl";
    v2.setForm(copy);
    QVERIFY(v2.saveConfig(tmp.filePath("demo.yaml")));
    QVERIFY2(v2.audit(), qPrintable(v2.message()));
    QVERIFY(v2.lastAudit().ok);
    QCOMPARE(v2.lastAudit().terminatedTurns, v2.lastAudit().assistantTurns);

    // Beside the audit, the memory plan. Its weights are the checkpoint's parameters at 4 bytes (fp32
    // compute); the parameters counted here from the file itself (bf16 tensor data = file size - 8 -
    // header length, 2 bytes each).
    const auto plan = v2.lastAudit().memory;
    QCOMPARE(copy.dtype, std::string("fp32"));
    QVERIFY(!copy.gradientCheckpointing);
    {
      QFile st(QStringLiteral(KH_SOURCE_DIR "/resources/models/tiny-llm-jp-3/model.safetensors"));
      QVERIFY(st.open(QIODevice::ReadOnly));
      const QByteArray head = st.read(8);
      quint64 n = 0;
      for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(head[i]);
      const quint64 parameters = (static_cast<quint64>(st.size()) - 8 - n) / 2;
      QCOMPARE(static_cast<quint64>(plan.weights), 4 * parameters);
    }
    QCOMPARE(plan.total, plan.weights + plan.trainable + plan.activations + plan.logits);
    QCOMPARE(plan.batch, copy.batchSize);
    QVERIFY(plan.sequence > 0 && plan.sequence <= copy.maxLength);
    QVERIFY2(plan.line.rfind("memory plan (batch ", 0) == 0, plan.line.c_str());
    QVERIFY2(v2.memoryPlanText().contains(QStringLiteral("Memory plan")), qPrintable(v2.memoryPlanText()));
    QVERIFY2(v2.memoryPlanText().contains(QString::fromStdString(plan.line).toHtmlEscaped()), qPrintable(v2.memoryPlanText()));
    // The form's checkbox and dtype combo reach the plan: bf16 halves the weights, checkpointing
    // shrinks the activations, the adapters' fp32 state stays as it was.
    copy.gradientCheckpointing = true;
    copy.dtype = "bf16";
    v2.setForm(copy);
    QVERIFY(v2.form() == copy);
    QVERIFY(v2.saveConfig(tmp.filePath("demo.yaml")));
    QVERIFY2(v2.audit(), qPrintable(v2.message()));
    const auto lean = v2.lastAudit().memory;
    QCOMPARE(lean.weights * 2, plan.weights);
    QVERIFY(lean.activations < plan.activations);
    QCOMPARE(lean.trainable, plan.trainable);
    QVERIFY(lean.gradientCheckpointing);
    QVERIFY2(lean.line.find(", gradient checkpointing)") != std::string::npos, lean.line.c_str());
    QVERIFY(readText(tmp.filePath("demo.yaml")).contains(QStringLiteral("gradient_checkpointing: true")));
    // The dtype combo offers exactly what the engine trains in.
    auto* dtypeCombo = v2.findChild<QComboBox*>(QStringLiteral("dtype"));
    QVERIFY(dtypeCombo);
    QStringList offered;
    for (int i = 0; i < dtypeCombo->count(); ++i) offered << dtypeCombo->itemText(i);
    QCOMPARE(offered, QStringList({QStringLiteral("fp32"), QStringLiteral("bf16")}));

    // A bad value: one line naming the file and the line, nothing else changes.
    writeText(path, "model: m\ndata: d.jsonl\nschedule: cosin\n");
    QVERIFY(!v2.loadConfig(path));
    QVERIFY2(v2.messageIsError(), qPrintable(v2.message()));
    QVERIFY2(v2.message().startsWith(path + ":3: schedule 'cosin'"), qPrintable(v2.message()));
    QVERIFY(!v2.message().contains('\n'));
    writeText(path, "model: m\ndata: d.jsonl\nlora:\n  rank: many\n");
    QVERIFY(!v2.loadConfig(path));
    QVERIFY2(v2.message().startsWith(path + ":4: 'rank'"), qPrintable(v2.message()));
    writeText(path, "model: m\ndata: d.jsonl\ndtype: fp16\n");
    QVERIFY(!v2.loadConfig(path));
    QVERIFY2(v2.message().startsWith(path + ":3: dtype 'fp16' is not fp32 or bf16"), qPrintable(v2.message()));
    writeText(path, "model: m\ndata: d.jsonl\ndtype: bfloat16\ngradient_checkpointing: true\n");
    QVERIFY2(v2.loadConfig(path), qPrintable(v2.message()));
    QCOMPARE(v2.form().dtype, std::string("bf16"));
    QVERIFY(v2.form().gradientCheckpointing);
    QVERIFY(v2.form().extra.empty());
    writeText(path, "model: m\ndata: [d.jsonl\n");
    QVERIFY(!v2.loadConfig(path));
    QVERIFY2(v2.message().contains("not valid YAML"), qPrintable(v2.message()));
    // A key no engine knows loads (kept), and Start names it with its line.
    writeText(path, "model: m\ndata: d.jsonl\nbogus_key: 1\n");
    QVERIFY(v2.loadConfig(path));
    QVERIFY(v2.startRun().isEmpty());
    QVERIFY2(v2.message().startsWith(path + ":3: unknown key 'bogus_key'"), qPrintable(v2.message()));
    // A missing model folder: Start refuses with the line of `model`, and the file is untouched.
    const QString handWritten = "# mine\nsteps: 3\nmodel: nowhere\ndata: d.jsonl\n";
    writeText(path, handWritten);
    QVERIFY(v2.loadConfig(path));
    v2.setRunsRoot(tmp.filePath("runs"));
    QVERIFY(v2.startRun().isEmpty());
    QVERIFY2(v2.message().startsWith(path + ":3: model folder"), qPrintable(v2.message()));
    QCOMPARE(readText(path), handWritten);
    QVERIFY(!QDir(tmp.filePath("runs")).exists() || QDir(tmp.filePath("runs")).isEmpty());
  }
};

// ---------------------------------------------------------------------------------------------------
class TestTrainAudit : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  // The audit tokenizes on a thread of its own: the window keeps handling its events (here a timer
  // due at once) while it runs, instead of freezing until the last example is tokenized.
  void auditRunsOffTheWindowThread() {
    QTemporaryDir tmp;
    kh::guitest::makeTinyModel(tmp.filePath("llama").toStdString(), "llama", 3, 2, true);
    writeText(tmp.filePath("data.jsonl"), numberData(4000));
    const QString path = tmp.filePath("TRAIN.yaml");
    writeText(path, "model: llama\ndata: data.jsonl\neval_split: 0.25\nsteps: 2\n");
    kh::JobRunner runner;
    kh::TrainView v(&runner);
    QVERIFY(v.loadConfig(path));
    bool firedDuringAudit = false, fired = false;
    QTimer::singleShot(0, &v, [&] {
      fired = true;
      firedDuringAudit = v.auditing();
    });
    QVERIFY2(v.audit(), qPrintable(v.message()));
    QVERIFY(fired);
    QVERIFY2(firedDuringAudit, "the timer waited for the audit: it ran on the window's thread");
    QVERIFY(!v.auditing());
    QCOMPARE(v.lastAudit().examples, int64_t(3000));
    QCOMPARE(v.lastAudit().heldOutExamples, int64_t(1000));
  }
  void maskedEndOfTurnIsRedAndStartIsRefused() {
    QTemporaryDir tmp;
    kh::guitest::makeTinyModel(tmp.filePath("gemma").toStdString(), "gemma2", 3, 2, true);
    writeText(tmp.filePath("data.jsonl"), numberData(10));
    const QString path = tmp.filePath("TRAIN.yaml");
    // 10 conversations, eval_split 0.2: 8 train, each one answer.
    writeText(path, "model: gemma\ndata: data.jsonl\neval_split: 0.2\nmask_end_of_turn: true\nsteps: 2\n");
    kh::JobRunner runner;
    kh::TrainView v(&runner);
    v.setRunsRoot(tmp.filePath("runs"));
    QVERIFY(v.loadConfig(path));
    QVERIFY2(v.audit(), qPrintable(v.message()));
    const auto& a = v.lastAudit();
    QCOMPARE(a.examples, int64_t(8));
    QCOMPARE(a.heldOutExamples, int64_t(2));
    QCOMPARE(a.assistantTurns, int64_t(8));
    QCOMPARE(a.terminatedTurns, int64_t(0));
    QVERIFY(!a.ok);
    QVERIFY2(v.stopShareText().startsWith("0.0% of answers"), qPrintable(v.stopShareText()));
    QVERIFY(v.stopShareIsRed());
    // Gemma's answers end on <end_of_turn>: here it follows the answer but is not trained.
    QVERIFY(!a.shown.empty());
    for (const auto& ex : a.shown) {
      int ends = 0;
      for (size_t k = 1; k < ex.tokens.size(); ++k)
        if (ex.tokens[k].endsAnswer) {
          ++ends;
          QCOMPARE(ex.tokens[k].piece, std::string("<end_of_turn>"));
          QVERIFY(!ex.tokens[k].trained);
          QVERIFY(ex.tokens[k - 1].trained);  // right after the trained answer
        }
      QCOMPARE(ends, 1);  // one answer per conversation
    }
    QVERIFY(v.auditHtml().contains("f4b4b4"));  // drawn as a masked stop
    if (qEnvironmentVariableIsSet("KH_AUDIT_SHOT")) {  // for looking at it, not a check
      v.resize(1200, 760);
      v.show();
      QTest::qWait(50);
      v.grab().save(qEnvironmentVariable("KH_AUDIT_SHOT"));
    }
    // Start is refused and nothing is written.
    QVERIFY(v.startRun().isEmpty());
    QVERIFY2(v.message().startsWith("Refused: only 0 of 8 answers"), qPrintable(v.message()));
    QVERIFY(!v.running());
    QVERIFY(!QDir(tmp.filePath("runs")).exists() || QDir(tmp.filePath("runs")).isEmpty());

    // Unmasked: 100%, not red; every shown example's last trained token is <end_of_turn>, the
    // prompt (up to "<start_of_turn>model\n") is masked and the answer is trained.
    auto f = v.form();
    f.maskEndOfTurn = false;
    v.setForm(f);
    QVERIFY2(v.audit(), qPrintable(v.message()));
    QVERIFY(v.lastAudit().ok);
    QVERIFY2(v.stopShareText().startsWith("100.0% of answers end on a trained stop token (8 / 8)"), qPrintable(v.stopShareText()));
    QVERIFY(!v.stopShareIsRed());
    QVERIFY(!v.lastAudit().shown.empty());
    for (const auto& ex : v.lastAudit().shown) {
      int lastTrained = -1, firstTrained = -1;
      for (int k = 0; k < static_cast<int>(ex.tokens.size()); ++k)
        if (ex.tokens[static_cast<size_t>(k)].trained) {
          if (firstTrained < 0) firstTrained = k;
          lastTrained = k;
        }
      QVERIFY(firstTrained > 0);
      QCOMPARE(ex.tokens[static_cast<size_t>(lastTrained)].piece, std::string("<end_of_turn>"));
      QVERIFY(ex.tokens[static_cast<size_t>(lastTrained)].endsAnswer);
      QString prompt;
      for (int k = 0; k < firstTrained; ++k) prompt += QString::fromStdString(ex.tokens[static_cast<size_t>(k)].piece);
      QVERIFY2(prompt.endsWith("<start_of_turn>model\\n"), qPrintable(prompt));
    }
    QVERIFY2(v.lastAudit().chatDiff.rfind("identical", 0) == 0, v.lastAudit().chatDiff.c_str());
  }
};

// ---------------------------------------------------------------------------------------------------
class TestTrainRun : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void shortRunPlotsStopsResumesAndComparesWithBase() {
    QTemporaryDir tmp;
    const QString base = tmp.filePath("gemma");
    kh::guitest::makeTinyModel(base.toStdString(), "gemma2", 5, 2, true);
    writeText(tmp.filePath("data.jsonl"), numberData(24));
    kh::MainWindow w(nullptr, false);
    w.runsView()->model()->setRoot(tmp.filePath("runs"));
    auto* v = w.trainView();
    v->setRunsRoot(tmp.filePath("runs"));
    QVERIFY(v->saveConfig(tmp.filePath("TRAIN.yaml")));
    kh::jobs::TrainForm f;
    f.model = "gemma";
    f.data = "data.jsonl";
    f.evalSplit = 0.25;
    f.targetModules = "proj";
    f.learningRate = 0.01;
    f.schedule = "cosine";
    f.warmupSteps = 2;
    f.steps = 12;
    f.batchSize = 4;
    f.seed = 1;
    f.evalEvery = 4;
    f.evalPrompts = 4;
    f.evalMaxNewTokens = 6;
    f.saveEvery = 1;  // a checkpoint every step: Stop can come at any step
    v->setForm(f);
    QSignalSpy finished(w.runner(), &kh::JobRunner::jobFinished);
    QSignalSpy progress(w.runner(), &kh::JobRunner::jobProgress);
    // Stop at the first progress report (one per step here), then resume to the end.
    QString firstProgress;
    QMetaObject::Connection stopOnce = connect(w.runner(), &kh::JobRunner::jobProgress, v, [&](int, double, const QString& text) {
      firstProgress = text;
      v->stop();
      QObject::disconnect(stopOnce);
    });
    const QString run = v->startRun();
    QVERIFY2(!run.isEmpty(), qPrintable(v->message()));
    QVERIFY(v->running());
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, 60000);
    const bool stopped = finished.at(0).at(2).toString() == "cancelled";
    if (stopped) {
      QVERIFY(!v->running());
      // (A folder written to in the last 30 s reads as running: files alone cannot tell a live run.)
      const auto status = kh::jobs::readRunInfo(run.toStdString()).status;
      QVERIFY2(status == "stopped" || status == "running", status.c_str());
      QVERIFY(QFile::exists(run + "/checkpoint/trainer_state.safetensors"));
      QVERIFY(v->resumeEnabled());
      QVERIFY(!v->chatVsBaseEnabled());
      v->resumeRun(run);
      QVERIFY2(v->running(), qPrintable(v->message()));
      QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 2, 60000);
    } else {
      qWarning("the run finished before Stop arrived; Stop/Resume not exercised this time");
    }
    QVERIFY2(finished.last().at(1).toBool(), qPrintable(finished.last().at(2).toString()));
    QVERIFY(!v->running());

    // The plots: every step's train loss and learning rate, eval at steps 4, 8, 12.
    auto* d = v->dashboard();
    d->poll();
    QCOMPARE(d->trainPoints(), 12);
    QCOMPARE(d->lrPoints(), 12);
    QCOMPARE(d->evalPoints(), 3);
    QCOMPARE(d->stopRatePoints(), 3);
    QCOMPARE(d->lastStep(), int64_t(12));
    // The learning-rate curve is the schedule's closed form: warm-up then cosine to zero.
    auto lr = d->lrPlot()->graph(0)->data();
    for (auto it = lr->constBegin(); it != lr->constEnd(); ++it) {
      const int s = static_cast<int>(it->key) - 1;  // 0-based step
      const double expect = s < 2 ? 0.01 * (s + 1) / 2.0 : 0.01 * 0.5 * (1 + std::cos(M_PI * (s - 2) / 10.0));
      QVERIFY2(std::abs(it->value - expect) < 1e-9, qPrintable(QString("step %1: %2 vs %3").arg(s + 1).arg(it->value).arg(expect)));
    }
    // The progress bar and line saw the steps. The line comes from the engine's structured progress:
    // its learning rate is the schedule's closed form at that step.
    QVERIFY(progress.count() > 0);
    {
      static const QRegularExpression re(QStringLiteral("^step (\\d+)/12 · loss \\d+\\.\\d{4} · lr (\\S+) · \\d+ tokens/s · ETA \\d+ s$"));
      const auto m = re.match(firstProgress);
      QVERIFY2(m.hasMatch(), qPrintable(firstProgress));
      const int s = m.captured(1).toInt() - 1;
      const double expect = s < 2 ? 0.01 * (s + 1) / 2.0 : 0.01 * 0.5 * (1 + std::cos(M_PI * (s - 2) / 10.0));
      QVERIFY2(std::abs(m.captured(2).toDouble() - expect) <= 0.001 * expect, qPrintable(firstProgress));
    }
    QCOMPARE(v->progressValue(), 1000);
    QVERIFY2(v->logText().contains("step 12/12"), qPrintable(v->logText()));
    // The audit the view shows is the one the run wrote.
    QVERIFY(v->audit());
    QCOMPARE(QString::fromStdString(v->lastAudit().report), readText(run + "/audit.txt"));
    // ...and so is the memory plan: the line the run printed before it loaded the model.
    QVERIFY2(v->logText().split(QLatin1Char('\n')).contains(QString::fromStdString(v->lastAudit().memory.line)),
             qPrintable(v->logText()));
    // The Runs view lists it as a finished training run.
    w.runsView()->model()->refresh();
    bool listed = false;
    for (int r = 0; r < w.runsView()->model()->rowCount(); ++r)
      if (w.runsView()->model()->dirAt(r) == run) {
        listed = true;
        QCOMPARE(QString::fromStdString(w.runsView()->model()->infoAt(r)->kind), QString("train"));
        QCOMPARE(QString::fromStdString(w.runsView()->model()->infoAt(r)->status), QString("finished"));
      }
    QVERIFY(listed);
    // Reopening the finished folder elsewhere shows its plots too; Runs > Open goes to this view.
    kh::JobRunner other;
    kh::TrainView reopened(&other);
    reopened.openRunFolder(run);
    QCOMPARE(reopened.dashboard()->trainPoints(), 12);
    QCOMPARE(reopened.dashboard()->evalPoints(), 3);
    QVERIFY(reopened.chatVsBaseEnabled());
    w.showView(kh::MainWindow::Models);
    Q_EMIT w.runsView()->openRequested(run);
    QCOMPARE(w.currentView(), int(kh::MainWindow::Train));

    // Chat vs base: the Compare tab gets the merged model and the base, both loaded.
    QVERIFY(v->chatVsBaseEnabled());
    QVERIFY(QFile::exists(run + "/merged/config.json"));
    v->chatVsBase();
    QCOMPARE(w.currentView(), int(kh::MainWindow::Chat));
    auto* compare = w.chatPage()->findChild<kh::gui::ComparePane*>();
    QVERIFY(compare);
    QTRY_VERIFY_WITH_TIMEOUT(compare->column(0)->engine() && compare->column(1)->engine(), 30000);
    QCOMPARE(QDir(QString::fromStdString(compare->column(0)->engine()->modelDir())).absolutePath(), QDir(run + "/merged").absolutePath());
    QCOMPARE(QDir(QString::fromStdString(compare->column(1)->engine()->modelDir())).absolutePath(), QDir(base).absolutePath());
  }

  // A run that wrote only the PEFT adapter: "Chat vs base" merges it into RUN/merged first (a job),
  // then opens both models.
  void adapterOnlyRunIsMergedForChatVsBase() {
    QTemporaryDir tmp;
    const QString base = tmp.filePath("gemma");
    kh::guitest::makeTinyModel(base.toStdString(), "gemma2", 6, 2, true);
    writeText(tmp.filePath("data.jsonl"), numberData(8));
    kh::MainWindow w(nullptr, false);
    auto* v = w.trainView();
    v->setRunsRoot(tmp.filePath("runs"));
    QVERIFY(v->saveConfig(tmp.filePath("TRAIN.yaml")));
    kh::jobs::TrainForm f;
    f.model = "gemma";
    f.data = "data.jsonl";
    f.evalSplit = 0.25;
    f.targetModules = "proj";
    f.steps = 2;
    f.batchSize = 2;
    f.evalPrompts = 2;
    f.evalMaxNewTokens = 4;
    f.exportMerged = false;
    v->setForm(f);
    QSignalSpy finished(w.runner(), &kh::JobRunner::jobFinished);
    const QString run = v->startRun();
    QVERIFY2(!run.isEmpty(), qPrintable(v->message()));
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, 60000);
    QVERIFY2(finished.at(0).at(1).toBool(), qPrintable(finished.at(0).at(2).toString()));
    QVERIFY(QFile::exists(run + "/adapter/adapter_model.safetensors"));
    QVERIFY(!QFile::exists(run + "/merged"));
    QVERIFY(v->chatVsBaseEnabled());
    v->chatVsBase();
    QTRY_COMPARE_WITH_TIMEOUT(w.currentView(), int(kh::MainWindow::Chat), 30000);
    QVERIFY(QFile::exists(run + "/merged/config.json"));
    auto* compare = w.chatPage()->findChild<kh::gui::ComparePane*>();
    QVERIFY(compare);
    QTRY_VERIFY_WITH_TIMEOUT(compare->column(0)->engine() && compare->column(1)->engine(), 30000);
    QCOMPARE(QDir(QString::fromStdString(compare->column(0)->engine()->modelDir())).absolutePath(), QDir(run + "/merged").absolutePath());
    QCOMPARE(QDir(QString::fromStdString(compare->column(1)->engine()->modelDir())).absolutePath(), QDir(base).absolutePath());
  }
};

int main(int argc, char** argv) {
  return kh::guitest::runTestClasses(argc, argv, "kh_train_gui_tests",
                                      {[] { return static_cast<QObject*>(new TestTrainForm); },
                                       [] { return static_cast<QObject*>(new TestTrainAudit); },
                                       [] { return static_cast<QObject*>(new TestTrainRun); }});
}

#include "test_train_view.moc"
