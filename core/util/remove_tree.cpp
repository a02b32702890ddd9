#include "core/util/remove_tree.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>

namespace calibq {

namespace {
int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path); }
}  // namespace

bool remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT;
  // FTW_DEPTH: children before their folder; FTW_PHYS: never follow links out of the tree.
  return ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

}  // namespace calibq
