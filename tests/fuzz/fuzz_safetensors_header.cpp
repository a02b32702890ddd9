// libFuzzer target: the safetensors header parser must reject any input with
// calibq::Error, never crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>

#include "core/io/safetensors_header.h"
#include "core/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    calibq::StHeader h = calibq::parse_safetensors_header(data, size, size, "fuzz");
    // A header that parses must describe tensors inside the input.
    for (const auto& t : h.tensors)
      if (h.data_start + t.end > size) __builtin_trap();
  } catch (const calibq::Error&) {
  }
  return 0;
}
