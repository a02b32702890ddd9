#include "analysis/table.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "core/util/error.h"

namespace calibq {

void Table::add_row(std::vector<std::string> cells) {
  if (cells.size() != columns_.size())
    fail("table: a row of {} cells for {} columns", cells.size(), columns_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::markdown() const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    width[c] = std::max<size_t>(3, columns_[c].size());
    for (const auto& r : rows_) width[c] = std::max(width[c], r[c].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out = "|";
    for (size_t c = 0; c < cells.size(); ++c) out += fmt::format(" {:<{}} |", cells[c], width[c]);
    return out + "\n";
  };
  std::string out = line(columns_) + "|";
  for (size_t c = 0; c < columns_.size(); ++c) out += std::string(width[c] + 2, '-') + "|";
  out += "\n";
  for (const auto& r : rows_) out += line(r);
  return out;
}

std::string Table::csv() const {
  auto quote = [](const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
  };
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < cells.size(); ++c) out += (c ? "," : "") + quote(cells[c]);
    out += "\n";
  };
  line(columns_);
  for (const auto& r : rows_) line(r);
  return out;
}

std::string Table::latex(const std::string& caption) const {
  auto esc = [](const std::string& s) {
    std::string o;
    for (char ch : s) {
      if (ch == '_' || ch == '%' || ch == '&' || ch == '#' || ch == '$') o += '\\';
      o += ch;
    }
    return o;
  };
  std::string out = "\\begin{table}[t]\n\\centering\n\\begin{tabular}{" + std::string(columns_.size(), 'l') + "}\n\\toprule\n";
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < cells.size(); ++c) out += (c ? " & " : "") + esc(cells[c]);
    out += " \\\\\n";
  };
  line(columns_);
  out += "\\midrule\n";
  for (const auto& r : rows_) line(r);
  out += "\\bottomrule\n\\end{tabular}\n";
  if (!caption.empty()) out += "\\caption{" + esc(caption) + "}\n";
  return out + "\\end{table}\n";
}

nlohmann::json Table::json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : rows_) {
    nlohmann::json row = nlohmann::json::object();
    for (size_t c = 0; c < columns_.size(); ++c) {
      char* end = nullptr;
      double v = std::strtod(r[c].c_str(), &end);
      if (!r[c].empty() && *end == '\0' && std::isfinite(v)) row[columns_[c]] = v;
      else row[columns_[c]] = r[c];
    }
    out.push_back(row);
  }
  return out;
}

std::string cell(double value, int digits) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return fmt::format("{:.{}f}", value, digits);
}

}  // namespace calibq
