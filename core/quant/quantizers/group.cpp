// group: group-specific min-max statistics: per channel, per token, or groups of g.
#include "core/quant/range_quant.h"
#include "core/quant/registry.h"

namespace calibq {

CALIBQ_REGISTER_QUANTIZER(QuantizerEntry{
    "group",
    "min-max uniform quantization with group-specific ranges: per channel (over tokens), per token "
    "(over channels), or groups of group_size tokens / channels",
    {bits_option("1"), clip_option("1"), axis_option("channel", false), group_size_option()},
    [](const QuantizerOptions& o, KVRole role) {
      RangeConfig c = range_config(o, role, parse_granularity(o.text("axis")));
      c.group_size = o.integer("group_size");
      return std::make_shared<RangeQuantizer>("group", role, o, c, RangeQuantizer::Format::Uniform);
    }});

}  // namespace calibq
