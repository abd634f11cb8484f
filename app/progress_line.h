// The CLI's progress line on stderr. On a terminal it is redrawn in place (carriage return, clear
// to the end of the line). On a pipe or a log file (nohup on a lab server, CI) a redrawn line
// would pile up as thousands of fragments on one line, so it prints a plain line only when the
// shown tenth changes (fraction known), or every 30 s (fraction unknown).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>

namespace kh::cli {

class ProgressLine {
 public:
  ProgressLine() : ProgressLine(std::cerr, isatty(2) != 0) {}
  ProgressLine(std::ostream& out, bool tty) : out_(out), tty_(tty) {}
  bool tty() const { return tty_; }
  // `fraction` in [0, 1], or negative when not known; `text` is the whole line, no newline.
  void show(double fraction, const std::string& text) {
    if (tty_) {
      out_ << "\r\033[K" << text << std::flush;
      drawn_ = true;
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (fraction >= 0) {
      const int tenth = static_cast<int>(10 * std::min(fraction, 1.0));
      if (tenth == lastTenth_) return;
      lastTenth_ = tenth;
    } else if (printed_ && now - lastPrint_ < std::chrono::seconds(30)) {
      return;
    }
    lastPrint_ = now;
    printed_ = true;
    out_ << text << "\n" << std::flush;
  }
  // A line of its own above the progress line (which the next show() draws again).
  void log(const std::string& line) {
    out_ << (tty_ && drawn_ ? "\r\033[K" : "") << line << "\n" << std::flush;
    drawn_ = false;
  }
  // Removes the line on a terminal (for a message that takes its place); nothing elsewhere.
  void clear() {
    if (tty_ && drawn_) out_ << "\r\033[K" << std::flush;
    drawn_ = false;
  }
  // Ends the line on a terminal, keeping it; nothing elsewhere (each plain line has its newline).
  void end() {
    if (tty_ && drawn_) out_ << "\n" << std::flush;
    drawn_ = false;
  }

 private:
  std::ostream& out_;
  bool tty_;
  bool drawn_ = false, printed_ = false;
  int lastTenth_ = -1;
  std::chrono::steady_clock::time_point lastPrint_{};
};

}  // namespace kh::cli
