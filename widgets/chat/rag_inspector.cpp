// DocumentsBox, RetrievalInspector, SourceDialog (see rag_inspector.h).
#include "widgets/chat/rag_inspector.h"

#include <chrono>

#include <QColor>
#include <QComboBox>
#include <QDesktopServices>
#include <QDialogButtonBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QPlainTextEdit>
#include <QPointer>
#include <QPushButton>
#include <QSlider>
#include <QSpinBox>
#include <QSignalBlocker>
#include <QTableWidget>
#include <QTextBlock>
#include <QTextBrowser>
#include <QTextCharFormat>
#include <QTextCursor>
#include <QUrl>
#include <QVBoxLayout>

#include <cmath>
#include <cstdlib>
#include <exception>

#include "widgets/chat/torch_free.h"

namespace kh::gui {

// ---- DocumentsBox ---------------------------------------------------------------------------------

DocumentsBox::DocumentsBox(RunOnWorker runOnWorker, QWidget* parent)
    : QWidget(parent), run_(std::move(runOnWorker)), channel_(std::make_shared<UiChannel>(this)) {
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  auto* title = new QLabel(tr("<b>Documents</b>"), this);
  dir_ = new QLineEdit(this);
  dir_->setObjectName("store_dir");
  dir_->setPlaceholderText(tr("Store folder (kumihimo-cli index add STORE FILES…)"));
  auto* browse = new QPushButton(tr("…"), this);
  browse->setToolTip(tr("Choose a store folder"));
  attach_ = new QPushButton(tr("Attach"), this);
  attach_->setObjectName("attach_store");
  detach_ = new QPushButton(tr("Detach"), this);
  detach_->setObjectName("detach_store");
  detach_->setEnabled(false);
  rebuild_ = new QPushButton(tr("Rebuild indexes"), this);
  rebuild_->setObjectName("rebuild_store");
  rebuild_->setToolTip(tr("Rebuild BM25 and the dense index from the stored chunks (as kumihimo-cli index rebuild)"));
  rebuild_->setVisible(false);
  addFiles_ = new QPushButton(tr("Add files…"), this);
  addFiles_->setObjectName("import_files");
  addFiles_->setToolTip(tr("Import text, Markdown or JSONL files into the store (changed documents only are redone; "
                           "a new folder becomes a store)"));
  addFolder_ = new QPushButton(tr("Add folder…"), this);
  addFolder_->setObjectName("import_folder");
  addFolder_->setToolTip(tr("Import every .txt .md .markdown .jsonl under a folder; documents of it that are gone are removed"));
  auto* row = new QHBoxLayout;
  row->addWidget(dir_, 1);
  row->addWidget(browse);
  row->addWidget(attach_);
  row->addWidget(detach_);
  row->addWidget(rebuild_);
  auto* importRow = new QHBoxLayout;
  importRow->addWidget(addFiles_);
  importRow->addWidget(addFolder_);
  importRow->addStretch(1);
  status_ = new QLabel(tr("no store: answers use no retrieval"), this);
  status_->setObjectName("store_status");
  status_->setWordWrap(true);
  status_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  k_ = new QSpinBox(this);
  k_->setObjectName("rag_k");
  k_->setRange(1, 50);
  const kh::RagSettings defaults;
  k_->setValue(defaults.k);
  k_->setToolTip(tr("Kept hits that go into the prompt, best first"));
  auto weight = [this](const char* name, const QString& tip) {
    auto* w = new QDoubleSpinBox(this);
    w->setObjectName(name);
    w->setRange(0.0, 100.0);
    w->setDecimals(2);
    w->setSingleStep(0.05);
    w->setValue(1.0);
    w->setToolTip(tip);
    return w;
  };
  denseWeight_ = weight("rag_dense_weight", tr("Weight of the dense ranking in reciprocal rank fusion"));
  bm25Weight_ = weight("rag_bm25_weight", tr("Weight of the BM25 ranking in reciprocal rank fusion"));
  template_ = new QPlainTextEdit(this);
  template_->setObjectName("rag_template");
  template_->setPlainText(QString::fromStdString(kh::defaultRagTemplate()));
  template_->setMaximumHeight(80);
  template_->setToolTip(tr("{context}: the kept hits as [1] …, [2] …; {question}: your message"));
  embedderDir_ = new QLineEdit(this);
  embedderDir_->setObjectName("embedder_dir");
  embedderDir_->setPlaceholderText(tr("none: BM25 only (a store keeps the embedder it was built with)"));
  embedderDir_->setToolTip(tr("The dense index's embedder for a new store: an encoder (multilingual-e5, ruri) or decoder "
                              "model folder, or encoder:DIR / decoder:DIR. Empty: the store's recorded one."));
  auto* embedderBrowse = new QPushButton(tr("…"), this);
  embedderBrowse->setToolTip(tr("Choose an embedder model folder"));
  mecabDir_ = new QLineEdit(this);
  mecabDir_->setObjectName("mecab_dic");
  mecabDir_->setPlaceholderText(tr("default: $KUMIHIMO_MECAB_DIC, else unidic_lite from pip"));
  QString mecabTip = tr("Stores embedded by ruri v1/v2 split words with MeCab: the dictionary folder "
                        "(dicrc, sys.dic; unidic_lite's dicdir). Used when the store is attached.");
  if (const char* env = std::getenv("KUMIHIMO_MECAB_DIC")) mecabTip += tr("\nKUMIHIMO_MECAB_DIC is %1").arg(env);
  mecabDir_->setToolTip(mecabTip);
  auto* mecabBrowse = new QPushButton(tr("…"), this);
  mecabBrowse->setToolTip(tr("Choose a MeCab dictionary folder"));
  rerankDir_ = new QLineEdit(this);
  rerankDir_->setObjectName("rerank_dir");
  rerankDir_->setPlaceholderText(tr("Reranker model folder (optional)"));
  rerankDir_->setToolTip(tr("A decoder instruction model asked whether each candidate answers the message "
                            "(yes/no log-odds); tiny or base models give noise"));
  auto* rerankBrowse = new QPushButton(tr("…"), this);
  rerankBrowse->setToolTip(tr("Choose a reranker model folder"));
  rerankK_ = new QSpinBox(this);
  rerankK_->setObjectName("rerank_k");
  rerankK_->setRange(1, 200);
  rerankK_->setValue(defaults.rerankK);
  rerankK_->setToolTip(tr("How many of the best fused candidates the reranker rescores"));
  rerankAnswers_ = new QLineEdit(this);
  rerankAnswers_->setObjectName("rerank_answers");
  rerankAnswers_->setPlaceholderText(tr("はい,いいえ"));
  rerankAnswers_->setMaximumWidth(110);
  rerankAnswers_->setToolTip(tr("The answer words the reranker compares, YES,NO; each must be one token "
                                "(empty: はい,いいえ, else yes,no)"));
  auto* reset = new QPushButton(tr("Default template"), this);
  auto* form = new QFormLayout;
  form->addRow(tr("Hits in prompt"), k_);
  auto* weights = new QHBoxLayout;
  weights->addWidget(new QLabel(tr("dense"), this));
  weights->addWidget(denseWeight_);
  weights->addWidget(new QLabel(tr("BM25"), this));
  weights->addWidget(bm25Weight_);
  form->addRow(tr("Fusion weights"), weights);
  auto* rerank = new QHBoxLayout;
  rerank->addWidget(rerankDir_, 1);
  rerank->addWidget(rerankBrowse);
  rerank->addWidget(new QLabel(tr("k"), this));
  rerank->addWidget(rerankK_);
  rerank->addWidget(rerankAnswers_);
  form->addRow(tr("Reranker"), rerank);
  auto* embedderRow = new QHBoxLayout;
  embedderRow->addWidget(embedderDir_, 1);
  embedderRow->addWidget(embedderBrowse);
  form->addRow(tr("Embedder"), embedderRow);
  auto* mecab = new QHBoxLayout;
  mecab->addWidget(mecabDir_, 1);
  mecab->addWidget(mecabBrowse);
  form->addRow(tr("MeCab dictionary"), mecab);
  lay->addWidget(title);
  lay->addLayout(row);
  lay->addLayout(importRow);
  lay->addWidget(status_);
  lay->addLayout(form);
  lay->addWidget(template_);
  lay->addWidget(reset, 0, Qt::AlignRight);
  connect(browse, &QPushButton::clicked, this, [this]() {
    const QString d = QFileDialog::getExistingDirectory(this, tr("Retrieval store"), dir_->text());
    if (!d.isEmpty()) dir_->setText(d);
  });
  connect(mecabBrowse, &QPushButton::clicked, this, [this]() {
    const QString d = QFileDialog::getExistingDirectory(this, tr("MeCab dictionary"), mecabDir_->text());
    if (!d.isEmpty()) mecabDir_->setText(d);
  });
  connect(rerankBrowse, &QPushButton::clicked, this, [this]() {
    const QString d = QFileDialog::getExistingDirectory(this, tr("Reranker model"), rerankDir_->text());
    if (!d.isEmpty()) rerankDir_->setText(d);
  });
  connect(embedderBrowse, &QPushButton::clicked, this, [this]() {
    const QString d = QFileDialog::getExistingDirectory(this, tr("Embedder model"), embedderDir_->text());
    if (!d.isEmpty()) embedderDir_->setText(d);
  });
  connect(addFiles_, &QPushButton::clicked, this, [this]() {
    const QStringList files = QFileDialog::getOpenFileNames(this, tr("Import documents"), QString(),
                                                            tr("Documents (*.txt *.md *.markdown *.jsonl);;All files (*)"));
    if (!files.isEmpty()) importDocuments(files);
  });
  connect(addFolder_, &QPushButton::clicked, this, [this]() {
    const QString d = QFileDialog::getExistingDirectory(this, tr("Import a folder of documents"));
    if (!d.isEmpty()) importDocuments({d});
  });
  connect(attach_, &QPushButton::clicked, this, &DocumentsBox::attach);
  connect(rebuild_, &QPushButton::clicked, this, &DocumentsBox::rebuildIndexes);
  connect(dir_, &QLineEdit::returnPressed, this, &DocumentsBox::attach);
  connect(detach_, &QPushButton::clicked, this, &DocumentsBox::detach);
  connect(reset, &QPushButton::clicked, this,
          [this]() { template_->setPlainText(QString::fromStdString(kh::defaultRagTemplate())); });
}

DocumentsBox::~DocumentsBox() { channel_->close(); }

void DocumentsBox::setStoreDir(const QString& dir) { dir_->setText(dir); }
QString DocumentsBox::storeDir() const { return dir_->text().trimmed(); }
QString DocumentsBox::status() const { return status_->text(); }

kh::RagSettings DocumentsBox::settings() const {
  kh::RagSettings s;
  s.k = k_->value();
  s.denseWeight = denseWeight_->value();
  s.bm25Weight = bm25Weight_->value();
  s.promptTemplate = template_->toPlainText().toStdString();
  s.rerankModel = rerankDir_->text().trimmed().toStdString();
  s.rerankK = rerankK_->value();
  s.rerankAnswers = rerankAnswers_->text().trimmed().toStdString();
  return s;
}

void DocumentsBox::attach() {
  const std::string dir = storeDir().toStdString();
  const std::string mecab = mecabDir_->text().trimmed().toStdString();
  attach_->setEnabled(false);
  status_->setText(tr("opening…"));
  auto channel = channel_;
  QPointer<DocumentsBox> self(this);
  run_([dir, mecab, channel, self]() {
    std::shared_ptr<kh::RagStore> store;
    QString error;
    bool rebuildable = false;
    try {
      kh::setMecabDictionary(mecab);
      store = kh::RagStore::open(dir);
    } catch (const std::exception& e) {
      error = QString::fromStdString(e.what());
      rebuildable = kh::ragStoreNeedsRebuild(dir);
    }
    channel->post([self, store, error, rebuildable]() {
      if (!self) return;
      self->attach_->setEnabled(true);
      self->rebuild_->setVisible(rebuildable);
      self->rebuild_->setEnabled(rebuildable);
      if (store) {
        self->store_ = store;
        self->detach_->setEnabled(true);
        self->status_->setText(self->importNote_ + QString::fromStdString(store->describe()));
        self->importNote_.clear();
        Q_EMIT self->attached(store);
      } else {
        self->importNote_.clear();
        self->status_->setText(error);
        Q_EMIT self->attachFailed(error);
      }
    });
  });
}

bool DocumentsBox::rebuildOffered() const { return !rebuild_->isHidden() && rebuild_->isEnabled(); }

void DocumentsBox::rebuildIndexes() {
  const std::string dir = storeDir().toStdString();
  const std::string mecab = mecabDir_->text().trimmed().toStdString();
  rebuild_->setEnabled(false);
  attach_->setEnabled(false);
  status_->setText(tr("rebuilding the indexes…"));
  auto channel = channel_;
  QPointer<DocumentsBox> self(this);
  run_([dir, mecab, channel, self]() {
    QString error;
    try {
      kh::setMecabDictionary(mecab);
      auto last = std::make_shared<std::chrono::steady_clock::time_point>();
      kh::rebuildRagStore(dir, [channel, self, last](size_t done, size_t total) {
        const auto now = std::chrono::steady_clock::now();
        if (done < total && now - *last < std::chrono::milliseconds(50)) return;  // ~20 Hz
        *last = now;
        channel->post([self, done, total]() {
          if (self) self->status_->setText(tr("rebuilding the indexes: %1 / %2 chunks embedded").arg(done).arg(total));
        });
      });
    } catch (const std::exception& e) {
      error = QString::fromStdString(e.what());
    }
    channel->post([self, error]() {
      if (!self) return;
      if (!error.isEmpty()) {
        self->attach_->setEnabled(true);
        self->rebuild_->setEnabled(true);
        self->status_->setText(error);
        Q_EMIT self->attachFailed(error);
        return;
      }
      self->rebuild_->setVisible(false);
      self->attach();
    });
  });
}

void DocumentsBox::importDocuments(const QStringList& paths) {
  const std::string dir = storeDir().toStdString();
  const std::string embedder = embedderDir_->text().trimmed().toStdString();
  const std::string mecab = mecabDir_->text().trimmed().toStdString();
  std::vector<std::string> files;
  for (const QString& p : paths) files.push_back(p.toStdString());
  for (QPushButton* b : {attach_, addFiles_, addFolder_}) b->setEnabled(false);
  status_->setText(tr("importing %n path(s)…", nullptr, static_cast<int>(files.size())));
  auto channel = channel_;
  QPointer<DocumentsBox> self(this);
  run_([dir, embedder, mecab, files, channel, self]() {
    QString summary, error;
    try {
      kh::setMecabDictionary(mecab);
      auto last = std::make_shared<std::chrono::steady_clock::time_point>();
      summary = QString::fromStdString(kh::importIntoRagStore(dir, files, embedder, [channel, self, last](size_t done, size_t total) {
        const auto now = std::chrono::steady_clock::now();
        if (done < total && now - *last < std::chrono::milliseconds(50)) return;  // ~20 Hz
        *last = now;
        channel->post([self, done, total]() {
          if (self) self->status_->setText(tr("importing: %1 / %2 chunks embedded").arg(done).arg(total));
        });
      }));
    } catch (const std::exception& e) {
      error = QString::fromStdString(e.what());
    }
    channel->post([self, summary, error]() {
      if (!self) return;
      for (QPushButton* b : {self->attach_, self->addFiles_, self->addFolder_}) b->setEnabled(true);
      if (!error.isEmpty()) {
        self->status_->setText(error);
        Q_EMIT self->attachFailed(error);
        return;
      }
      self->importNote_ = tr("imported: %1 · ").arg(summary);
      Q_EMIT self->imported(summary);
      self->attach();  // the store as it is now (also when another copy of it was attached)
    });
  });
}

void DocumentsBox::detach() {
  store_.reset();
  detach_->setEnabled(false);
  status_->setText(tr("no store: answers use no retrieval"));
  Q_EMIT detached();
}

// ---- SourceDialog --------------------------------------------------------------------------------

SourceDialog::SourceDialog(const kh::RagSource& source, QWidget* parent) : QDialog(parent), source_(source) {
  setObjectName("source_dialog");
  setWindowTitle(tr("Source: %1").arg(QString::fromStdString(source.docId)));
  resize(640, 420);
  auto* lay = new QVBoxLayout(this);
  QString where = QString::fromStdString(source.path);
  if (source.line > 0) where += tr(", line %1").arg(source.line);
  auto* head = new QLabel(QString("<b>%1</b> — %2").arg(QString::fromStdString(source.docId).toHtmlEscaped(), where.toHtmlEscaped()), this);
  head->setTextInteractionFlags(Qt::TextSelectableByMouse);
  head->setWordWrap(true);
  lay->addWidget(head);
  if (!source.note.empty()) {
    auto* note = new QLabel(QString::fromStdString(source.note), this);
    note->setStyleSheet("color: #b06000");
    lay->addWidget(note);
  }
  text_ = new QTextBrowser(this);
  text_->setObjectName("source_text");
  // The chunk: bytes [byteBegin, byteEnd) of the UTF-8 text, as QString (UTF-16) positions.
  const std::string& t = source.text;
  const QString before = QString::fromStdString(t.substr(0, source.byteBegin));
  const QString chunk = QString::fromStdString(t.substr(source.byteBegin, source.byteEnd - source.byteBegin));
  text_->setPlainText(QString::fromStdString(t));
  QTextCursor c(text_->document());
  c.setPosition(before.size());
  c.setPosition(before.size() + chunk.size(), QTextCursor::KeepAnchor);
  QTextCharFormat mark;
  mark.setBackground(QColor("#ffe58a"));
  c.mergeCharFormat(mark);
  QTextCursor at(text_->document());
  at.setPosition(before.size());
  text_->setTextCursor(at);
  text_->ensureCursorVisible();
  lay->addWidget(text_, 1);
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close, this);
  auto* openFile = buttons->addButton(tr("Open file"), QDialogButtonBox::ActionRole);
  openFile->setObjectName("open_file");
  openFile->setEnabled(QFileInfo::exists(QString::fromStdString(source.path)));
  connect(openFile, &QPushButton::clicked, this, [this]() {
    QDesktopServices::openUrl(QUrl::fromLocalFile(QString::fromStdString(source_.path)));
  });
  connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
  lay->addWidget(buttons);
}

QString SourceDialog::highlightedText() const {
  // The span whose background is the highlight colour, read back from the document.
  QString out;
  for (QTextBlock b = text_->document()->begin(); b.isValid(); b = b.next()) {
    for (auto it = b.begin(); !it.atEnd(); ++it) {
      const QTextFragment f = it.fragment();
      if (f.isValid() && f.charFormat().background().color() == QColor("#ffe58a")) out += f.text();
    }
  }
  return out;
}

// ---- RetrievalInspector -----------------------------------------------------------------------------

namespace {

QTableWidgetItem* item(const QString& text) {
  auto* i = new QTableWidgetItem(text);
  i->setFlags(Qt::ItemIsSelectable | Qt::ItemIsEnabled);
  return i;
}

// A score cell: shown rounded, the exact value kept in Qt::UserRole.
QTableWidgetItem* scoreItem(const std::optional<double>& v, int precision) {
  auto* i = item(v ? QString::number(*v, 'g', precision) : QString("–"));
  if (v) i->setData(Qt::UserRole, *v);
  i->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
  return i;
}

QTableWidgetItem* rankItem(int rank) {
  auto* i = item(rank > 0 ? QString::number(rank) : QString("–"));
  if (rank > 0) i->setData(Qt::UserRole, rank);
  i->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
  return i;
}

}  // namespace

RetrievalInspector::RetrievalInspector(QWidget* parent) : QWidget(parent) {
  setObjectName("retrieval_inspector");
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  lay->addWidget(new QLabel(tr("<b>Retrieval inspector</b> (Ctrl+I)"), this));
  turnList_ = new QListWidget(this);
  turnList_->setObjectName("turns");
  turnList_->setMaximumHeight(64);
  lay->addWidget(turnList_);

  mode_ = new QComboBox(this);
  mode_->setObjectName("threshold_mode");
  mode_->addItem(tr("relative to best"), "relative");
  mode_->addItem(tr("z-score"), "zscore");
  mode_->addItem(tr("none"), "none");
  slider_ = new QSlider(Qt::Horizontal, this);
  slider_->setObjectName("threshold_slider");
  value_ = new QDoubleSpinBox(this);
  value_->setObjectName("threshold_value");
  auto* row = new QHBoxLayout;
  row->addWidget(new QLabel(tr("Threshold"), this));
  row->addWidget(mode_);
  row->addWidget(slider_, 1);
  row->addWidget(value_);
  lay->addLayout(row);
  summary_ = new QLabel(tr("No retrieval yet: attach a store under Documents and ask."), this);
  summary_->setObjectName("inspector_summary");
  summary_->setWordWrap(true);
  lay->addWidget(summary_);

  table_ = new QTableWidget(0, ColumnCount, this);
  table_->setObjectName("hits");
  table_->setHorizontalHeaderLabels({tr("#"), tr("chunk"), tr("doc"), tr("text"), tr("dense cos"), tr("dense #"),
                                     tr("BM25"), tr("BM25 #"), tr("fused"), tr("rerank"), tr("kept"), tr("in prompt"),
                                     tr("threshold")});
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setSelectionMode(QAbstractItemView::SingleSelection);
  table_->verticalHeader()->hide();
  table_->verticalHeader()->setDefaultSectionSize(fontMetrics().height() + 6);
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  table_->horizontalHeader()->setSectionResizeMode(Text, QHeaderView::Interactive);
  table_->setColumnWidth(Text, 160);
  table_->setWordWrap(false);
  table_->setToolTip(tr("Double-click a hit to open its source document"));
  lay->addWidget(table_, 1);

  prompt_ = new QPlainTextEdit(this);
  prompt_->setObjectName("turn_prompt");
  prompt_->setReadOnly(true);
  prompt_->setMaximumHeight(80);
  prompt_->setPlaceholderText(tr("The turn's message as the model saw it"));
  open_ = new QPushButton(tr("Open source"), this);
  open_->setObjectName("open_source");
  auto* bottom = new QHBoxLayout;
  bottom->addWidget(prompt_, 1);
  bottom->addWidget(open_, 0, Qt::AlignTop);
  lay->addLayout(bottom);

  connect(turnList_, &QListWidget::currentRowChanged, this, [this](int row) {
    shown_ = row >= 0 && row < static_cast<int>(turns_.size()) ? turns_[static_cast<size_t>(row)].second : nullptr;
    fillTable();
  });
  connect(mode_, qOverload<int>(&QComboBox::currentIndexChanged), this, [this]() {
    if (syncing_) return;
    syncValueControls();
    applyPreview();
  });
  connect(value_, qOverload<double>(&QDoubleSpinBox::valueChanged), this, [this](double v) {
    if (syncing_) return;
    syncing_ = true;
    slider_->setValue(static_cast<int>(std::lround(v * 100)));
    syncing_ = false;
    applyPreview();
  });
  connect(slider_, &QSlider::valueChanged, this, [this](int v) {
    if (syncing_) return;
    value_->setValue(v / 100.0);  // and valueChanged previews
  });
  connect(table_, &QTableWidget::cellDoubleClicked, this, [this](int row, int) { openSource(row); });
  connect(open_, &QPushButton::clicked, this, [this]() { openSource(table_->currentRow()); });
  setThreshold(kh::RagThreshold{});
}

void RetrievalInspector::syncValueControls() {
  // relative: ratio in [0, 1]; z-score: z in [-3, 3]; none: nothing to set.
  const QString mode = mode_->currentData().toString();
  syncing_ = true;
  const double keep = value_->value();
  if (mode == "relative") {
    value_->setRange(0.0, 1.0);
    value_->setSingleStep(0.01);
    slider_->setRange(0, 100);
  } else {
    value_->setRange(-3.0, 3.0);
    value_->setSingleStep(0.05);
    slider_->setRange(-300, 300);
  }
  value_->setDecimals(2);
  value_->setValue(keep);
  slider_->setValue(static_cast<int>(std::lround(value_->value() * 100)));
  value_->setEnabled(mode != "none");
  slider_->setEnabled(mode != "none");
  syncing_ = false;
}

kh::RagThreshold RetrievalInspector::threshold() const {
  kh::RagThreshold t;
  t.mode = mode_->currentData().toString().toStdString();
  if (t.mode == "relative") t.ratio = value_->value();
  if (t.mode == "zscore") t.zMin = value_->value();
  return t;
}

void RetrievalInspector::setThreshold(const kh::RagThreshold& t) {
  syncing_ = true;
  const int i = mode_->findData(QString::fromStdString(t.mode));
  mode_->setCurrentIndex(i < 0 ? 0 : i);
  syncing_ = false;
  syncValueControls();
  syncing_ = true;
  value_->setValue(t.mode == "zscore" ? t.zMin : t.ratio);
  slider_->setValue(static_cast<int>(std::lround(value_->value() * 100)));
  syncing_ = false;
  applyPreview();
}

void RetrievalInspector::setTurns(const std::vector<ChatEntry>& entries) {
  const int keep = selectedTurn();
  turns_.clear();
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].retrieval) turns_.emplace_back(static_cast<int>(i), entries[i].retrieval);
  QSignalBlocker block(turnList_);
  turnList_->clear();
  int row = -1;
  for (size_t t = 0; t < turns_.size(); ++t) {
    QString q = QString::fromStdString(turns_[t].second->query).simplified();
    if (q.size() > 40) q = q.left(40) + "…";
    turnList_->addItem(tr("Turn %1: %2").arg(turns_[t].first / 2 + 1).arg(q));
    if (turns_[t].first == keep) row = static_cast<int>(t);
  }
  if (row < 0 && !turns_.empty()) row = static_cast<int>(turns_.size()) - 1;
  turnList_->setCurrentRow(row);
  shown_ = row >= 0 ? turns_[static_cast<size_t>(row)].second : nullptr;
  fillTable();
}

bool RetrievalInspector::selectTurn(int entryIndex) {
  for (size_t t = 0; t < turns_.size(); ++t)
    if (turns_[t].first == entryIndex) {
      turnList_->setCurrentRow(static_cast<int>(t));  // fills the table
      return true;
    }
  return false;
}

int RetrievalInspector::selectedTurn() const {
  const int row = turnList_->currentRow();
  return row >= 0 && row < static_cast<int>(turns_.size()) ? turns_[static_cast<size_t>(row)].first : -1;
}

void RetrievalInspector::fillTable() {
  table_->setRowCount(0);
  prompt_->clear();
  if (!shown_) {
    preview_.clear();
    summary_->setText(turns_.empty() ? tr("No retrieval yet: attach a store under Documents and ask.") : QString());
    return;
  }
  const auto& hits = shown_->hits;
  table_->setRowCount(static_cast<int>(hits.size()));
  for (size_t r = 0; r < hits.size(); ++r) {
    const kh::RagHit& h = hits[r];
    const int row = static_cast<int>(r);
    table_->setItem(row, Rank, rankItem(row + 1));
    table_->setItem(row, Chunk, item(QString::fromStdString(h.chunkId)));
    table_->setItem(row, Doc, item(QString::fromStdString(h.docId)));
    const QString text = QString::fromStdString(h.text).simplified();
    auto* preview = item(text.size() > 60 ? text.left(60) + "…" : text);
    preview->setToolTip(QString::fromStdString(h.text));
    table_->setItem(row, Text, preview);
    table_->setItem(row, DenseCos, scoreItem(h.denseCosine, 4));
    table_->setItem(row, DenseRank, rankItem(h.denseRank));
    table_->setItem(row, Bm25, scoreItem(h.bm25Score, 4));
    table_->setItem(row, Bm25Rank, rankItem(h.bm25Rank));
    table_->setItem(row, Fused, scoreItem(h.fusedScore, 4));
    table_->setItem(row, Rerank, scoreItem(h.rerankScore, 4));
    table_->setItem(row, Kept, item(QString()));
    table_->setItem(row, Why, item(QString()));
    table_->setItem(row, InPrompt, item(h.inPrompt ? QString("✓") : QString()));
  }
  prompt_->setPlainText(QString::fromStdString(shown_->prompt));
  applyPreview();
}

void RetrievalInspector::applyPreview() {
  if (!shown_) return;
  const kh::RagThreshold t = threshold();
  try {
    preview_ = kh::rethreshold(*shown_, t);
  } catch (const std::exception& e) {
    summary_->setText(QString::fromStdString(e.what()));
    return;
  }
  const QColor dropped = droppedColor();
  const QColor normal = palette().color(QPalette::Active, QPalette::Text);
  for (size_t r = 0; r < preview_.size() && static_cast<int>(r) < table_->rowCount(); ++r) {
    const int row = static_cast<int>(r);
    const kh::RagHit& h = preview_[r];
    table_->item(row, Kept)->setText(h.kept ? tr("kept") : tr("dropped"));
    table_->item(row, Kept)->setData(Qt::UserRole, h.kept);
    table_->item(row, Why)->setText(QString::fromStdString(h.threshold));
    for (int c = 0; c < ColumnCount; ++c) table_->item(row, c)->setForeground(h.kept ? normal : dropped);
  }
  int sent = 0;
  for (const auto& h : shown_->hits) sent += h.inPrompt;
  const auto& at = shown_->settings.threshold;
  const QString answered = at.mode == "relative" ? tr("relative %1").arg(at.ratio)
                           : at.mode == "zscore" ? tr("z-score %1").arg(at.zMin)
                                                 : tr("none");
  summary_->setText(tr("%1 of %2 candidates kept (%3) · %4 went into the prompt when answered (%5, k %6) · store %7")
                        .arg(keptCount())
                        .arg(preview_.size())
                        .arg(QString::fromStdString(shown_->method))
                        .arg(sent)
                        .arg(answered)
                        .arg(shown_->settings.k)
                        .arg(QString::fromStdString(shown_->storeDir)) +
                    (shown_->reranker.empty() ? QString()
                                              : tr(" · reranked (best %1) by %2")
                                                    .arg(shown_->settings.rerankK)
                                                    .arg(QString::fromStdString(shown_->reranker))));
  Q_EMIT thresholdChanged(t);
}

int RetrievalInspector::keptCount() const {
  int n = 0;
  for (const auto& h : preview_) n += h.kept;
  return n;
}

QString RetrievalInspector::summary() const { return summary_->text(); }

SourceDialog* RetrievalInspector::openSource(int row, bool show) {
  if (!shown_ || row < 0 || row >= static_cast<int>(shown_->hits.size())) return nullptr;
  if (!store_ || store_->dir() != shown_->storeDir) {
    summary_->setText(tr("This turn was retrieved from %1: attach that store to open its sources.")
                          .arg(QString::fromStdString(shown_->storeDir)));
    return nullptr;
  }
  try {
    auto* d = new SourceDialog(store_->source(shown_->hits[static_cast<size_t>(row)].chunkId), this);
    d->setAttribute(Qt::WA_DeleteOnClose);
    if (show) d->show();
    return d;
  } catch (const std::exception& e) {
    summary_->setText(QString::fromStdString(e.what()));
    return nullptr;
  }
}

}  // namespace kh::gui
