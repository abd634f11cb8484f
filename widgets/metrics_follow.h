// Following a run folder's metrics.jsonl from a dashboard (Evolve, Train): what the file gained
// since the last poll, whole lines only, watching the file once it exists.
#pragma once

#include <QFileInfo>
#include <QFileSystemWatcher>
#include <QString>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/jobs/jobs.h"

namespace kh {

// Reads `dir`/metrics.jsonl from `offset` (advanced past what was read). A file shorter than the
// offset (a resumed run truncated it) calls `reset` first, then the lines come from the start. The
// last unreadable line's error goes to `lastError`. `add` gets each new line. Returns whether the
// caller has anything to redraw.
inline bool followMetrics(const QString& dir, QFileSystemWatcher* watcher, uint64_t& offset, QString& lastError,
                          const std::function<void()>& reset, const std::function<void(const nlohmann::json&)>& add) {
  if (dir.isEmpty()) return false;
  const QString metrics = dir + QStringLiteral("/metrics.jsonl");
  if (!watcher->files().contains(metrics) && QFileInfo::exists(metrics)) watcher->addPath(metrics);
  auto chunk = jobs::readMetrics(metrics.toStdString(), offset);
  if (chunk.reset) reset();
  offset = chunk.nextOffset;
  if (!chunk.errors.empty()) lastError = QString::fromStdString(chunk.errors.back());
  if (chunk.lines.empty() && !chunk.reset) return false;
  for (const auto& l : chunk.lines) add(l);
  return true;
}

}  // namespace kh
