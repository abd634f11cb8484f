// The CLI's progress line: redrawn in place on a terminal, a bounded number of whole lines on a
// pipe or a log file (what `nohup kumihimo-cli merge … 2> log` leaves behind).
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "app/progress_line.h"

using kh::cli::ProgressLine;

TEST(ProgressLine, OnAPipeEachTenthIsOneWholeLine) {
  std::ostringstream out;
  ProgressLine line(out, /*tty=*/false);
  for (int i = 0; i <= 1000; ++i) line.show(i / 1000.0, "step " + std::to_string(i));
  line.end();
  const std::string s = out.str();
  EXPECT_EQ(s.find('\r'), std::string::npos);
  EXPECT_EQ(s.find('\033'), std::string::npos);
  // 0/10 … 10/10: eleven lines, the first at the start and the last at completion.
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 11) << s;
  EXPECT_EQ(s.rfind("step 0\n", 0), 0u) << s;
  EXPECT_NE(s.find("step 100\n"), std::string::npos) << s;
  EXPECT_EQ(s.substr(s.size() - 10), "step 1000\n") << s;
}

TEST(ProgressLine, OnAPipeAnUnknownFractionPrintsOnceUntilThirtySecondsPass) {
  std::ostringstream out;
  ProgressLine line(out, false);
  for (int i = 0; i < 500; ++i) line.show(-1.0, "waiting " + std::to_string(i));
  EXPECT_EQ(out.str(), "waiting 0\n");
}

TEST(ProgressLine, OnATerminalTheLineIsRedrawnAndLogLinesGoAboveIt) {
  std::ostringstream out;
  ProgressLine line(out, /*tty=*/true);
  line.show(0.1, "a");
  line.show(0.2, "b");
  line.log("note: x");
  line.show(0.3, "c");
  line.end();
  EXPECT_EQ(out.str(), "\r\033[Ka\r\033[Kb\r\033[Knote: x\n\r\033[Kc\n");
}

TEST(ProgressLine, ClearRemovesTheLineOnATerminalAndWritesNothingOnAPipe) {
  std::ostringstream tty, pipe;
  ProgressLine t(tty, true), p(pipe, false);
  t.show(0.5, "half");
  p.show(0.5, "half");
  t.clear();
  p.clear();
  t.end();  // nothing left to end
  p.end();
  EXPECT_EQ(tty.str(), "\r\033[Khalf\r\033[K");
  EXPECT_EQ(pipe.str(), "half\n");
}
