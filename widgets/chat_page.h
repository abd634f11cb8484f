// The Chat page's factory: the main window asks for the page here and never knows its type.
// Implemented by widgets/chat_page_placeholder.cpp until the chat widgets (widgets/chat/) land.
#pragma once

class QWidget;

namespace kh {
QWidget* makeChatPage(QWidget* parent);
}
