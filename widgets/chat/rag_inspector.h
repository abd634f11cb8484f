// Retrieval-augmented chat on the chat page: the "Documents" box (attach a store folder, its size
// and embedder, k and the editable prompt template), the retrieval inspector beside the
// conversation (each turn's hits with every score; a threshold that live-previews what would be
// kept) and the source viewer ("open source": the document with the chunk highlighted).
// Talks to core only through core/jobs/chat_engine.h; opens stores on the worker, never on the UI thread.
#pragma once

#include <QColor>
#include <QStringList>
#include <QDialog>
#include <QWidget>

#include <memory>
#include <vector>

#include "core/jobs/chat_engine.h"
#include "widgets/chat/chat_column.h"
#include "widgets/chat/chat_worker.h"

class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QListWidget;
class QPlainTextEdit;
class QPushButton;
class QSlider;
class QSpinBox;
class QTableWidget;
class QTextBrowser;

namespace kh::gui {

class DocumentsBox : public QWidget {
  Q_OBJECT
 public:
  DocumentsBox(RunOnWorker runOnWorker, QWidget* parent = nullptr);
  ~DocumentsBox() override;
  void setStoreDir(const QString& dir);
  QString storeDir() const;
  void attach();   // opens the store on the worker; attached or attachFailed follows
  void detach();
  // Offered (the "Rebuild indexes" button shows) when attaching failed on a corrupt or missing
  // index file while the documents are intact: rebuilds on the worker, then attaches.
  void rebuildIndexes();
  bool rebuildOffered() const;
  // Imports text, Markdown and JSONL files or folders into the store folder on the worker (as
  // `kumihimo-cli index add`; a new folder becomes a store, embedded by the box's embedder or BM25
  // only), then attaches it; imported (the counts) or attachFailed follows.
  void importDocuments(const QStringList& paths);
  std::shared_ptr<kh::RagStore> store() const { return store_; }
  QString status() const;                 // the store's size and embedder, or why it failed
  QPlainTextEdit* templateEditor() const { return template_; }
  // k, the fusion weights, the template and the optional reranker (model folder + how many fused
  // candidates it rescores) from the box (the threshold comes from the inspector).
  kh::RagSettings settings() const;

 Q_SIGNALS:
  void attached(std::shared_ptr<kh::RagStore> store);
  void detached();
  void attachFailed(const QString& message);
  void imported(const QString& summary);

 private:
  RunOnWorker run_;
  std::shared_ptr<UiChannel> channel_;
  std::shared_ptr<kh::RagStore> store_;
  QLineEdit* dir_;
  QPushButton *attach_, *detach_, *rebuild_, *addFiles_, *addFolder_;
  QLabel* status_;
  QSpinBox* k_;
  QDoubleSpinBox *denseWeight_, *bm25Weight_;
  QPlainTextEdit* template_;
  QString importNote_;      // the last import's counts, shown once with the store it attached
  QLineEdit* embedderDir_;  // embedder of a new store ("" = the store's own, or BM25 only)
  QLineEdit* mecabDir_;   // MeCab dictionary for ruri v1/v2 stores ("" = the usual search)
  QLineEdit* rerankDir_;  // optional reranker model folder ("" = none)
  QSpinBox* rerankK_;
  QLineEdit* rerankAnswers_;  // "YES,NO" or "" for the defaults
};

// The document a hit came from, the chunk highlighted; "Open file" hands the file to the desktop.
class SourceDialog : public QDialog {
  Q_OBJECT
 public:
  SourceDialog(const kh::RagSource& source, QWidget* parent = nullptr);
  const kh::RagSource& source() const { return source_; }
  QString highlightedText() const;  // the chunk as highlighted in the viewer
  QTextBrowser* viewer() const { return text_; }

 private:
  kh::RagSource source_;
  QTextBrowser* text_;
};

class RetrievalInspector : public QWidget {
  Q_OBJECT
 public:
  enum Column { Rank, Chunk, Doc, Text, DenseCos, DenseRank, Bm25, Bm25Rank, Fused, Rerank, Kept, InPrompt, Why, ColumnCount };
  explicit RetrievalInspector(QWidget* parent = nullptr);

  void setStore(std::shared_ptr<kh::RagStore> store) { store_ = std::move(store); }
  // The conversation's user turns that have a retrieval; keeps the selected turn when it is still there.
  void setTurns(const std::vector<ChatEntry>& entries);
  bool selectTurn(int entryIndex);  // false when that entry has no retrieval
  int selectedTurn() const;         // entry index, -1 when none

  kh::RagThreshold threshold() const;
  void setThreshold(const kh::RagThreshold& t);  // updates the controls and the preview

  QTableWidget* table() const { return table_; }
  static QColor droppedColor() { return QColor(0x9e, 0x9e, 0x9e); }  // text of rows the threshold drops
  const std::vector<kh::RagHit>& previewHits() const { return preview_; }  // rows, under the current threshold
  int keptCount() const;
  QString summary() const;
  // The row's source in a dialog (shown unless `show` is false); null with the error in summary's
  // place when the store cannot say (no store, chunk gone).
  SourceDialog* openSource(int row, bool show = true);

 Q_SIGNALS:
  void thresholdChanged(const kh::RagThreshold& t);

 private:
  void fillTable();
  void applyPreview();
  void syncValueControls();
  std::shared_ptr<kh::RagStore> store_;
  std::vector<std::pair<int, std::shared_ptr<const kh::RagRetrieval>>> turns_;
  std::shared_ptr<const kh::RagRetrieval> shown_;
  std::vector<kh::RagHit> preview_;
  bool syncing_ = false;
  QListWidget* turnList_;
  QComboBox* mode_;
  QSlider* slider_;
  QDoubleSpinBox* value_;
  QLabel* summary_;
  QPlainTextEdit* prompt_;  // the turn's user message as the model saw it
  QTableWidget* table_;
  QPushButton* open_;
};

}  // namespace kh::gui
