#include "tests/imagectl_runner.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "tests/process.h"
#include "tests/stack.h"

namespace tests {

ImagectlResult RunImagectl(const std::string& dir, const std::vector<std::string>& args,
                           const std::vector<std::string>& env) {
  static int n = 0;
  const std::string out_path = absl::StrCat(dir, "/out", ++n);
  const std::string err_path = absl::StrCat(dir, "/err", n);
  std::vector<std::string> argv = {RunfilePath("client/imagectl")};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::string> envp = {"HOME=" + dir + "/home", "PATH=/usr/bin:/bin"};
  envp.insert(envp.end(), env.begin(), env.end());
  pid_t pid = fork();
  if (pid == 0) {
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    std::vector<char*> c_argv, c_env;
    for (auto& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    for (auto& e : envp) c_env.push_back(e.data());
    c_env.push_back(nullptr);
    execve(c_argv[0], c_argv.data(), c_env.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ImagectlResult result;
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadFile(out_path);
  result.err = ReadFile(err_path);
  return result;
}

}  // namespace tests
