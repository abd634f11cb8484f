// SamplingSettingsBox, MessageBox, ModelPicker (see chat_controls.h).
#include "widgets/chat/chat_controls.h"

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QVBoxLayout>
#include <QKeyEvent>
#include <QLabel>
#include <QLineEdit>
#include <QPointer>
#include <QPushButton>
#include <QSpinBox>

#include <climits>
#include <exception>

#include "widgets/chat/torch_free.h"

namespace kh::gui {

void addInputArea(QVBoxLayout* into, QWidget* input, QPushButton* send, QPushButton* stop, QPushButton* regenerate,
                  QPushButton* clear, QPushButton* exportButton) {
  auto* inputRow = new QHBoxLayout;
  inputRow->addWidget(input, 1);
  auto* buttons = new QVBoxLayout;
  buttons->addWidget(send);
  buttons->addWidget(stop);
  inputRow->addLayout(buttons);
  into->addLayout(inputRow);
  auto* actions = new QHBoxLayout;
  actions->addWidget(regenerate);
  actions->addWidget(clear);
  actions->addStretch(1);
  if (exportButton) actions->addWidget(exportButton);
  into->addLayout(actions);
}

SamplingSettingsBox::SamplingSettingsBox(QWidget* parent) : QWidget(parent) {
  auto* outer = new QVBoxLayout(this);
  auto* form = new QFormLayout;
  outer->addLayout(form);
  outer->addStretch(1);  // the form stays compact at the top
  system_ = new QPlainTextEdit(this);
  system_->setObjectName("system");
  system_->setPlaceholderText(tr("System prompt (empty: none)"));
  system_->setMaximumHeight(90);
  auto dspin = [this](const char* name, double lo, double hi, double step, int decimals) {
    auto* b = new QDoubleSpinBox(this);
    b->setObjectName(name);
    b->setRange(lo, hi);
    b->setSingleStep(step);
    b->setDecimals(decimals);
    return b;
  };
  auto ispin = [this](const char* name, int lo, int hi) {
    auto* b = new QSpinBox(this);
    b->setObjectName(name);
    b->setRange(lo, hi);
    return b;
  };
  temperature_ = dspin("temperature", 0, 5, 0.05, 2);
  temperature_->setToolTip(tr("0 = greedy"));
  topP_ = dspin("top_p", 0.01, 1, 0.05, 2);
  minP_ = dspin("min_p", 0, 0.99, 0.01, 2);
  repetition_ = dspin("repetition_penalty", 0.01, 5, 0.05, 2);
  repetition_->setToolTip(tr("1 = off"));
  topK_ = ispin("top_k", 0, 1000000);
  topK_->setToolTip(tr("0 = off"));
  maxNew_ = ispin("max_new_tokens", 1, 1000000);
  seed_ = ispin("seed", 0, INT_MAX);
  template_ = new QLineEdit(this);
  template_->setObjectName("template");
  template_->setPlaceholderText(tr("the model's own (or gemma, chatml, ...)"));
  form->addRow(tr("System"), system_);
  form->addRow(tr("Temperature"), temperature_);
  form->addRow(tr("Top-p"), topP_);
  form->addRow(tr("Top-k"), topK_);
  form->addRow(tr("Min-p"), minP_);
  form->addRow(tr("Repetition penalty"), repetition_);
  form->addRow(tr("Max new tokens"), maxNew_);
  form->addRow(tr("Seed"), seed_);
  form->addRow(tr("Chat format"), template_);
  setSettings(kh::ChatSettings{});
}

kh::ChatSettings SamplingSettingsBox::settings() const {
  kh::ChatSettings s;
  s.system = system_->toPlainText().toStdString();
  s.temperature = temperature_->value();
  s.topP = topP_->value();
  s.minP = minP_->value();
  s.repetitionPenalty = repetition_->value();
  s.topK = topK_->value();
  s.maxNewTokens = maxNew_->value();
  s.seed = static_cast<uint64_t>(seed_->value());
  s.templateOverride = template_->text().trimmed().toStdString();
  return s;
}

void SamplingSettingsBox::setSettings(const kh::ChatSettings& s) {
  system_->setPlainText(QString::fromStdString(s.system));
  temperature_->setValue(s.temperature);
  topP_->setValue(s.topP);
  minP_->setValue(s.minP);
  repetition_->setValue(s.repetitionPenalty);
  topK_->setValue(static_cast<int>(s.topK));
  maxNew_->setValue(static_cast<int>(s.maxNewTokens));
  seed_->setValue(static_cast<int>(s.seed));
  template_->setText(QString::fromStdString(s.templateOverride));
}

MessageBox::MessageBox(QWidget* parent) : QPlainTextEdit(parent) {
  setPlaceholderText(tr("Message (Enter sends, Shift+Enter new line)"));
  setMaximumHeight(100);
}

void MessageBox::keyPressEvent(QKeyEvent* e) {
  if ((e->key() == Qt::Key_Return || e->key() == Qt::Key_Enter) && !(e->modifiers() & Qt::ShiftModifier)) {
    Q_EMIT sendRequested();
    return;
  }
  if (e->key() == Qt::Key_Return || e->key() == Qt::Key_Enter) {  // Shift+Enter: a plain new line
    insertPlainText("\n");
    return;
  }
  QPlainTextEdit::keyPressEvent(e);
}

ModelPicker::ModelPicker(const QString& label, RunOnWorker runOnWorker, QWidget* parent)
    : QWidget(parent), run_(std::move(runOnWorker)), channel_(std::make_shared<UiChannel>(this)) {
  auto* lay = new QHBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  dir_ = new QLineEdit(this);
  dir_->setObjectName("model_dir");
  dir_->setPlaceholderText(tr("Model folder (config.json, *.safetensors, tokenizer)"));
  auto* browse = new QPushButton(tr("Browse…"), this);
  device_ = new QComboBox(this);
  device_->setEditable(true);
  device_->addItems({"cpu", "cuda", "cuda:1"});
  load_ = new QPushButton(tr("Load"), this);
  status_ = new QLabel(this);
  lay->addWidget(new QLabel(label, this));
  lay->addWidget(dir_, 1);
  lay->addWidget(browse);
  lay->addWidget(device_);
  lay->addWidget(load_);
  lay->addWidget(status_);
  connect(browse, &QPushButton::clicked, this, [this]() {
    const QString d = QFileDialog::getExistingDirectory(this, tr("Model folder"), dir_->text());
    if (!d.isEmpty()) dir_->setText(d);
  });
  connect(load_, &QPushButton::clicked, this, &ModelPicker::load);
  connect(dir_, &QLineEdit::returnPressed, this, &ModelPicker::load);
}

ModelPicker::~ModelPicker() { channel_->close(); }

void ModelPicker::setModelDir(const QString& dir) { dir_->setText(dir); }
QString ModelPicker::modelDir() const { return dir_->text().trimmed(); }
QString ModelPicker::device() const { return device_->currentText().trimmed(); }

void ModelPicker::load() {
  const std::string dir = modelDir().toStdString(), device = this->device().toStdString();
  load_->setEnabled(false);
  status_->setText(tr("loading…"));
  auto channel = channel_;
  QPointer<ModelPicker> self(this);
  run_([dir, device, channel, self]() {
    std::shared_ptr<kh::ChatEngine> engine;
    QString error;
    try {
      engine = kh::ChatEngine::load(dir, device);
    } catch (const std::exception& e) {
      error = QString::fromStdString(e.what());
    }
    channel->post([self, engine, error]() {
      if (!self) return;
      self->load_->setEnabled(true);
      if (engine) {
        self->status_->setText(tr("loaded"));
        self->status_->setToolTip(QString::fromStdString(engine->describe()));
        Q_EMIT self->engineLoaded(engine);
      } else {
        self->status_->setText(tr("failed"));
        self->status_->setToolTip(error);
        Q_EMIT self->loadFailed(error);
      }
    });
  });
}

}  // namespace kh::gui
