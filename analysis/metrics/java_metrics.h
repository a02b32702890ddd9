// METEOR and SPICE: Java programs that are not calibq's. With the official jars' paths
// (METEOR 1.5, SPICE 1.0, as pycocoevalcap ships them) and a java binary, calibq runs them
// the way pycocoevalcap does; otherwise it reports them as absent, with the reason, and
// never a number of its own.
#pragma once

#include <map>
#include <string>

#include "analysis/metrics/caption_metrics.h"

namespace calibq {

struct JavaMetricConfig {
  std::string java = "java";
  std::string meteor_jar;   // meteor-1.5.jar (with its data/ folder beside it)
  std::string spice_jar;    // spice-1.0.jar (with its lib/ folder beside it)
  std::string spice_cache;  // folder for SPICE's parse cache; empty: a temporary one
};

struct JavaMetricResult {
  bool available = false;
  std::string reason;  // why it is absent
  double score = 0;
  std::map<std::string, double> per_image;
};

// Tokenized inputs, as for the other caption metrics. METEOR: `java -jar -Xmx2G jar - -
// -stdio -l en -norm`, one "SCORE ||| refs ||| hyp" line per image, then one "EVAL ||| stats"
// line; the per-image scores and the corpus score are read back.
JavaMetricResult meteor_score(const CaptionRefs& refs, const CaptionCands& cands, const JavaMetricConfig& config);
// SPICE: writes [{image_id, test, refs}] to a JSON file, runs `java -jar -Xmx8G jar in -cache
// dir -out out -subset -silent`, and averages scores.All.f.
JavaMetricResult spice_score(const CaptionRefs& refs, const CaptionCands& cands, const JavaMetricConfig& config);

}  // namespace calibq
