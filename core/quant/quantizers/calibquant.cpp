// calibquant: CalibQuant (arXiv 2502.14882 v2). Post-scaled per-channel quantization with
// the authors' clipping (0.5 keys / 0.3 values at 1 bit) and, for keys at 1 and 2 bits,
// the calibration of the visual tokens' pre-softmax scores onto [m + a, M + b].
#include "core/quant/range_quant.h"
#include "core/quant/registry.h"

namespace calibq {
namespace {

class CalibQuantizer : public RangeQuantizer {
 public:
  CalibQuantizer(KVRole role, QuantizerOptions options)
      : RangeQuantizer("calibquant", role, options, range_config(options, role, Granularity::Channel),
                       Format::PostScaled),
        a_(options.number("calib_a")),
        b_(options.number("calib_b")) {
    const std::string& mode = options.text("calibrate");
    // The authors calibrate at 1 and 2 bits; at wider codes the scores are not inflated.
    calibrate_ = role == KVRole::Key && (mode == "on" || (mode == "auto" && config().bits <= 2));
  }
  ScoreCalibration score_calibration() const override { return {calibrate_, a_, b_}; }

 private:
  double a_, b_;
  bool calibrate_ = false;
};

}  // namespace

CALIBQ_REGISTER_QUANTIZER(QuantizerEntry{
    "calibquant",
    "CalibQuant: post-scaled per-channel codes, range clipping, and calibration of the visual "
    "pre-softmax scores from [m, M] to [m + calib_a, M + calib_b] (keys, at 1-2 bits by default)",
    {bits_option("1"), clip_option("auto"),
     {"calibrate", OptionType::Choice, "auto", "calibrate the visual scores (auto: keys at 1 and 2 bits)",
      {"auto", "on", "off"}},
     {"calib_a", OptionType::Float, "0", "offset added to the minimum of the visual scores", {}, -100.0, 100.0},
     {"calib_b", OptionType::Float, "-3", "offset added to the maximum of the visual scores", {}, -100.0, 100.0}},
    [](const QuantizerOptions& o, KVRole role) { return std::make_shared<CalibQuantizer>(role, o); }});

}  // namespace calibq
