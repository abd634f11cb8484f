// Errors for the whole engine: kh::Error for bad input (names the file, tensor or line, the
// cause, and a hint), KH_ASSERT for our own bugs. Must never include Qt or torch headers:
// the fuzzer and the widgets use it too.
#pragma once

#include <stdexcept>
#include <string>

namespace kh {

// A user or input error. what() is one line: "<where>: <cause>" plus "; hint: <hint>" when given.
class Error : public std::runtime_error {
 public:
  Error(const std::string& where, const std::string& cause, const std::string& hint = {});
  const std::string& where() const { return where_; }
  const std::string& cause() const { return cause_; }
  const std::string& hint() const { return hint_; }

 private:
  std::string where_, cause_, hint_;
};

// Raised when a job sees its cancellation flag; the job boundary turns it into "cancelled".
class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("cancelled") {}
};

[[noreturn]] void assertFailed(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace kh

// Invariants of our own code (not user input): a failure is a bug in Kumihimo.
#define KH_ASSERT(cond, ...)                                                              \
  do {                                                                                    \
    if (!(cond)) ::kh::assertFailed(#cond, __FILE__, __LINE__, std::string(__VA_ARGS__)); \
  } while (0)
