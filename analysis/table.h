// A small results table written as Markdown, CSV and LaTeX (and JSON rows), so that every
// summary a researcher diffs or pastes into a paper comes from one place.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace calibq {

class Table {
 public:
  explicit Table(std::vector<std::string> columns) : columns_(std::move(columns)) {}
  // Cells as text; the row must have one cell per column.
  void add_row(std::vector<std::string> cells);
  const std::vector<std::string>& columns() const { return columns_; }
  const std::vector<std::vector<std::string>>& rows() const { return rows_; }

  std::string markdown() const;
  std::string csv() const;  // RFC 4180 quoting
  std::string latex(const std::string& caption = "") const;
  nlohmann::json json() const;  // a list of {column: cell}; numeric cells as numbers

 private:
  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// Formats a double for tables: fixed `digits` after the point, "inf"/"nan" spelled out.
std::string cell(double value, int digits = 4);

}  // namespace calibq
