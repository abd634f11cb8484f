// The Chat page's factory: the main window asks for the page here and never knows its type.
// Implemented by widgets/chat/chat_page.cpp (kumihimo_chat_widgets): a model picker (folder,
// device) over the tabs "Chat" and "Compare". It never touches torch (see widgets/chat/).
#pragma once

class QWidget;

namespace kh {
QWidget* makeChatPage(QWidget* parent);
}
