// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/util/error.h"
#include "core/util/remove_tree.h"

namespace calibq::test {

// A fresh folder under the system temp dir, removed with the fixture.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("calibq_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    remove_tree(path_.string());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { remove_tree(path_.string()); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs the calibq binary with `args` (a shell-quoted string).
inline CommandResult run_calibq(const std::string& args) {
  TempDir tmp;
  std::string cmd = std::string(CALIBQ_BINARY) + " " + args + " >" + tmp.file("out") + " 2>" + tmp.file("err");
  int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_bytes(tmp.file("out"));
  r.err = read_bytes(tmp.file("err"));
  return r;
}

// Whether gnuplot (the plots' renderer, a Debian package) is on PATH: the GPU machine has none.
inline bool has_gnuplot() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

// Expects DIR/STEM.png and DIR/STEM.svg to be a real PNG and a complete SVG, and the
// gnuplot script STEM.gp that made them to be kept beside them.
inline void expect_rendered_plot(const std::string& dir, const std::string& stem) {
  const std::string png = read_bytes(dir + "/" + stem + ".png");
  EXPECT_GT(png.size(), 1000u) << stem;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << stem;
  const std::string svg = read_bytes(dir + "/" + stem + ".svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos) << stem;
  EXPECT_NE(svg.find("</svg>"), std::string::npos) << stem;
  EXPECT_TRUE(std::filesystem::exists(dir + "/" + stem + ".gp")) << stem;
}

// Expects `fn` to throw calibq::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected calibq::Error";
  } catch (const calibq::Error& e) {
    std::string what = e.what();
    for (const auto& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  }
}

}  // namespace calibq::test
