// Recursive removal of a folder, written with nftw(3) rather than
// std::filesystem::remove_all: PyTorch's wheels (LibTorch 2.x) export their own copy of
// libstdc++'s filesystem internals from libtorch_cpu.so, and remove_all segfaults when
// it binds to that copy (seen on the GPU machine; every other std::filesystem call
// calibq makes works there).
#pragma once

#include <string>

namespace calibq {

// Removes `path` and everything under it; a missing path is not an error. Returns
// false when something could not be removed.
bool remove_tree(const std::string& path);

}  // namespace calibq
