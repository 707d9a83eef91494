#include "comm/process_liveness.h"

#include <signal.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>

namespace loom::comm {

bool ProcessExited(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  // /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces and parentheses, so the state is
  // the first field after the last ')'.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::stringstream text;
  text << stat.rdbuf();
  const std::string s = text.str();
  const size_t close = s.rfind(')');
  if (close == std::string::npos || close + 2 >= s.size()) return false;
  const char state = s[close + 2];
  return state == 'Z' || state == 'X';
}

}  // namespace loom::comm
