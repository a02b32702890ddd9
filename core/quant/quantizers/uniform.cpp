// uniform: min-max quantization with one (scale, zero-point) per sequence.
#include "core/quant/range_quant.h"
#include "core/quant/registry.h"

namespace calibq {

CALIBQ_REGISTER_QUANTIZER(QuantizerEntry{
    "uniform",
    "min-max uniform quantization, one range per sequence (whole [H, N, D] tensor of each batch entry)",
    {bits_option("1"), clip_option("1")},
    [](const QuantizerOptions& o, KVRole role) {
      return std::make_shared<RangeQuantizer>("uniform", role, o, range_config(o, role, Granularity::Tensor),
                                              RangeQuantizer::Format::Uniform);
    }});

}  // namespace calibq
