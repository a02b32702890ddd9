// calibq's one exception type. Every error the user can cause (a bad file, a bad
// option, a tensor of the wrong shape) is thrown as calibq::Error with a message that
// names the file, key or value at fault; the CLI prints it and exits non-zero.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace calibq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace calibq
