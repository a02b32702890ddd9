// Precompiled header for calibq targets: LibTorch's ATen is by far the most expensive
// include of the project, so every target parses it once.
#pragma once
#include <ATen/ATen.h>
#include <string>
#include <vector>
#include <map>
#include <memory>
