// The Chat page's factory: the main window asks for the page here and never knows its type.
// Implemented by widgets/chat/chat_page.cpp (kumihimo_chat_widgets): a model picker (folder,
// device) over the tabs "Chat" and "Compare". It never touches torch (see widgets/chat/).
#pragma once

#include <functional>

class QString;
class QWidget;

namespace kh {
// `runOnWorker` runs a task on the thread that owns the device (the main window's job runner), in
// order; empty: the page starts a worker thread of its own (tests, a page shown alone).
QWidget* makeChatPage(QWidget* parent, std::function<void(std::function<void()>)> runOnWorker = {});
// Shows the page's Compare tab with model A (the picker above the tabs) = `modelA` and model B =
// `modelB`, both loaded on the worker (e.g. a fine-tuned model and its base). `chatPage` is what
// makeChatPage returned; anything else is ignored.
void openCompare(QWidget* chatPage, const QString& modelA, const QString& modelB);
// Stops the answers the page is streaming (its Chat and Compare tabs), as their Stop buttons do:
// the main window's Cancel calls it when the device's running job is a chat answer.
void stopChatAnswers(QWidget* chatPage);
}
