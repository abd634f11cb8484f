// Placeholder Chat page (replaced by the chat widgets in widgets/chat/).
#include <QLabel>

#include "widgets/chat_page.h"

namespace kh {
QWidget* makeChatPage(QWidget* parent) {
  auto* l = new QLabel(QStringLiteral("Chat\n\nChat with a model and compare two side by side: coming with the chat pane."),
                       parent);
  l->setAlignment(Qt::AlignCenter);
  l->setObjectName(QStringLiteral("chatPlaceholder"));
  return l;
}
}  // namespace kh
