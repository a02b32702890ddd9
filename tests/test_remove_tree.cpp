#include <gtest/gtest.h>

#include <filesystem>

#include "core/util/remove_tree.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

TEST(RemoveTree, RemovesNestedFoldersAndFilesButNotLinkTargets) {
  test::TempDir outside;
  test::write_bytes(outside.file("keep.txt"), "keep");
  test::TempDir dir;
  std::string root = dir.file("root");
  std::filesystem::create_directories(root + "/a/b/c");
  test::write_bytes(root + "/a/b/c/f.bin", "x");
  test::write_bytes(root + "/a/g.txt", "y");
  std::filesystem::create_directory_symlink(outside.path(), root + "/link");
  EXPECT_TRUE(remove_tree(root));
  EXPECT_FALSE(std::filesystem::exists(root));
  EXPECT_TRUE(std::filesystem::exists(outside.file("keep.txt")));
  EXPECT_TRUE(remove_tree(root)) << "a missing path is not an error";
}

}  // namespace
}  // namespace calibq
