#include "analysis/metrics/java_metrics.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/io/atomic_file.h"
#include "core/util/error.h"
#include "core/util/remove_tree.h"

namespace calibq {

namespace fs = std::filesystem;

namespace {

// Why a jar cannot run, or "" when it can.
std::string unavailable(const std::string& what, const std::string& jar, const std::string& java) {
  if (jar.empty()) return what + ": no jar given";
  if (!fs::is_regular_file(jar)) return what + ": " + jar + " does not exist";
  std::string probe = "\"" + java + "\" -version >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) return what + ": '" + java + "' does not run";
  return "";
}

// A child process with its stdin and stdout piped to us.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv) {
    int in[2], out[2];
    if (::pipe(in) != 0 || ::pipe(out) != 0) fail("cannot create pipes for {}", argv[0]);
    pid_ = ::fork();
    if (pid_ < 0) fail("cannot start {}", argv[0]);
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::close(in[1]);
      ::close(out[0]);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      std::_Exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = ::fdopen(in[1], "w");
    from_ = ::fdopen(out[0], "r");
  }
  ~Child() {
    if (to_) std::fclose(to_);
    if (from_) std::fclose(from_);
    if (pid_ > 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == 0) {
        ::kill(pid_, SIGTERM);
        ::waitpid(pid_, &status, 0);
      }
    }
  }
  void write_line(const std::string& line) {
    if (std::fputs((line + "\n").c_str(), to_) < 0 || std::fflush(to_) != 0) fail("METEOR: the jar stopped reading");
  }
  std::string read_line() {
    std::string out;
    int c;
    while ((c = std::fgetc(from_)) != EOF && c != '\n') out += static_cast<char>(c);
    if (c == EOF && out.empty()) fail("METEOR: the jar ended without an answer");
    while (!out.empty() && (out.back() == '\r' || out.back() == ' ')) out.pop_back();
    return out;
  }

 private:
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

double number(const std::string& s, const char* what) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0') fail("{}: the jar answered '{}', not a number", what, s);
  return v;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
}

}  // namespace

JavaMetricResult meteor_score(const CaptionRefs& refs, const CaptionCands& cands, const JavaMetricConfig& config) {
  JavaMetricResult r;
  r.reason = unavailable("METEOR", config.meteor_jar, config.java);
  if (!r.reason.empty()) return r;
  Child jar({config.java, "-jar", "-Xmx2G", config.meteor_jar, "-", "-", "-stdio", "-l", "en", "-norm"});
  std::string eval = "EVAL";
  std::vector<std::string> ids;
  for (const auto& [id, hyp_in] : cands) {
    // As pycocoevalcap: '|||' cannot occur in the hypothesis, and double spaces are folded once.
    std::string hyp = hyp_in;
    replace_all(hyp, "|||", "");
    replace_all(hyp, "  ", " ");
    std::string line = "SCORE";
    for (const auto& ref : refs.at(id)) line += " ||| " + ref;
    line += " ||| " + hyp;
    jar.write_line(line);
    eval += " ||| " + jar.read_line();
    ids.push_back(id);
  }
  jar.write_line(eval);
  for (const auto& id : ids) r.per_image[id] = number(jar.read_line(), "METEOR");
  r.score = number(jar.read_line(), "METEOR");
  r.available = true;
  return r;
}

JavaMetricResult spice_score(const CaptionRefs& refs, const CaptionCands& cands, const JavaMetricConfig& config) {
  JavaMetricResult r;
  r.reason = unavailable("SPICE", config.spice_jar, config.java);
  if (!r.reason.empty()) return r;
  fs::path tmp = fs::temp_directory_path() / ("calibq_spice_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  struct Cleanup {
    fs::path p;
    ~Cleanup() { remove_tree(p.string()); }
  } cleanup{tmp};
  nlohmann::json input = nlohmann::json::array();
  for (const auto& [id, hyp] : cands) input.push_back({{"image_id", id}, {"test", hyp}, {"refs", refs.at(id)}});
  const std::string in = (tmp / "in.json").string(), out = (tmp / "out.json").string();
  write_text_atomically(in, input.dump());
  const std::string cache = config.spice_cache.empty() ? (tmp / "cache").string() : config.spice_cache;
  fs::create_directories(cache);
  std::string cmd = "\"" + config.java + "\" -jar -Xmx8G \"" + config.spice_jar + "\" \"" + in + "\" -cache \"" + cache +
                    "\" -out \"" + out + "\" -subset -silent >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) fail("SPICE: {} failed", config.spice_jar);
  std::ifstream f(out);
  if (!f) fail("SPICE: {} wrote no {}", config.spice_jar, out);
  nlohmann::json results;
  try {
    results = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("SPICE: its output is not JSON: {}", e.what());
  }
  double sum = 0;
  for (const auto& item : results) {
    std::string id = item.at("image_id").is_string() ? item["image_id"].get<std::string>() : item["image_id"].dump();
    double v = item.at("scores").at("All").at("f").get<double>();
    r.per_image[id] = v;
    sum += v;
  }
  if (results.empty()) fail("SPICE: no scores in {}", out);
  r.score = sum / static_cast<double>(results.size());
  r.available = true;
  return r;
}

}  // namespace calibq
