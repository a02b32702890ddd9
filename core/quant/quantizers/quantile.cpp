// quantile: ranges from quantiles (outliers do not spend the levels), or levels placed
// at quantiles of each group (a non-uniform codebook).
#include "core/quant/range_quant.h"
#include "core/quant/registry.h"
#include "core/util/error.h"

namespace calibq {

CALIBQ_REGISTER_QUANTIZER(QuantizerEntry{
    "quantile",
    "quantile-based: range [quantile(q), quantile(1-q)] per group with uniform levels, or (levels=quantile) "
    "2^b levels at the group's quantiles (i+1/2)/2^b",
    {bits_option("1"), clip_option("1"),
     {"q", OptionType::Float, "0.01", "lower quantile of the range (levels=uniform)", {}, 0.0, 0.49},
     {"levels", OptionType::Choice, "uniform", "uniform levels over the range, or levels at quantiles",
      {"uniform", "quantile"}},
     axis_option("channel", true), group_size_option()},
    [](const QuantizerOptions& o, KVRole role) {
      RangeConfig c = range_config(o, role, parse_granularity(o.text("axis")));
      c.group_size = o.integer("group_size");
      c.source = RangeSource::Quantile;
      c.quantile = o.number("q");
      RangeQuantizer::Format format = RangeQuantizer::Format::Uniform;
      if (o.is("levels", "quantile")) {
        if (c.bits > 4) fail("quantizer 'quantile': levels=quantile supports bits 1 to 4 (a 2^b codebook per group), got {}", c.bits);
        if (c.clip != 1.0) fail("quantizer 'quantile': clip does not apply to levels=quantile");
        format = RangeQuantizer::Format::Codebook;
      }
      return std::make_shared<RangeQuantizer>("quantile", role, o, c, format);
    }});

}  // namespace calibq
