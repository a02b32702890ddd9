// post_scaled: codes plus (scale, zero-point); attention scores and the weighted sum of
// values are computed on the codes and scaled afterwards (paper.md, "Post-scaling").
#include "core/quant/range_quant.h"
#include "core/quant/registry.h"

namespace calibq {

CALIBQ_REGISTER_QUANTIZER(QuantizerEntry{
    "post_scaled",
    "bit-packed codes with scale and zero-point applied after the matmuls: "
    "q.(s*(c-z)) = (q*s).c - q.(s*z)",
    {bits_option("1"), clip_option("1"), axis_option("channel", true)},
    [](const QuantizerOptions& o, KVRole role) {
      return std::make_shared<RangeQuantizer>("post_scaled", role, o,
                                              range_config(o, role, parse_granularity(o.text("axis"))),
                                              RangeQuantizer::Format::PostScaled);
    }});

}  // namespace calibq
