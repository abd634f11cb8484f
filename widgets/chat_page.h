// The workbench's Chat page: a model picker (folder, device) over the tabs "Chat" and "Compare".
// The main window embeds it; it never touches torch (see widgets/chat/).
#pragma once

class QWidget;

QWidget* makeChatPage(QWidget* parent);
