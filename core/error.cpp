// kh::Error formatting and the KH_ASSERT failure path.
#include "core/error.h"

namespace kh {

static std::string oneLine(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

static std::string compose(const std::string& where, const std::string& cause, const std::string& hint) {
  std::string m = where.empty() ? cause : where + ": " + cause;
  if (!hint.empty()) m += "; hint: " + hint;
  return oneLine(m);
}

Error::Error(const std::string& where, const std::string& cause, const std::string& hint)
    : std::runtime_error(compose(where, cause, hint)), where_(where), cause_(cause), hint_(hint) {}

void assertFailed(const char* expr, const char* file, int line, const std::string& msg) {
  std::string m = std::string("internal error (a bug in Kumihimo): ") + expr + " failed at " + file + ":" +
                  std::to_string(line);
  if (!msg.empty()) m += ": " + msg;
  throw std::logic_error(m);
}

}  // namespace kh
