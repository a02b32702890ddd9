// Results are never half-written: every output file is written beside its final
// path and renamed over it, so a killed run leaves either the old file or the new one.
#pragma once

#include <functional>
#include <ostream>
#include <string>

namespace calibq {

// Calls `write` with a stream to a temporary file in the same folder, flushes and
// fsyncs it, then renames it to `path`. On any failure the temporary is removed and
// calibq::Error names `path`.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

// Convenience for text and JSON outputs.
void write_text_atomically(const std::string& path, const std::string& text);

}  // namespace calibq
