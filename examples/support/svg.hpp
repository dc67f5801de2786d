// SPDX-License-Identifier: MIT
// Plain SVG for the demo's pictures: a line chart (accuracy against length) and a heatmap
// (attention weights, a distance table). No plotting dependency; a browser opens the files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <relpos/core.hpp>

namespace relpos::svg {

/// One series of a line chart: a name for the legend and its (x, y) points.
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

/// Text escaped for XML (names and titles may hold any byte of the user's text).
inline std::string escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

inline std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

/// A color for series k: a fixed, readable palette, cycled.
inline const char* palette(std::size_t k) {
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return colors[k % (sizeof colors / sizeof colors[0])];
}

/// A line chart with a log2 x axis (lengths double) and a linear y axis from 0 to 1.
inline std::string line_chart_log2x(const std::string& title, const std::string& x_label,
                                    const std::string& y_label, const std::vector<Series>& series) {
  const double width = 640, height = 400, left = 60, right = 150, top = 40, bottom = 50;
  double x_min = INFINITY, x_max = -INFINITY;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!(x > 0)) throw std::invalid_argument("line_chart_log2x: x must be > 0");
      x_min = std::min(x_min, std::log2(x));
      x_max = std::max(x_max, std::log2(x));
    }
  }
  if (!(x_min <= x_max)) x_min = 0, x_max = 1;
  if (x_max == x_min) x_max = x_min + 1;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  auto px = [&](double x) { return left + (std::log2(x) - x_min) / (x_max - x_min) * plot_w; };
  auto py = [&](double y) { return top + (1.0 - std::clamp(y, 0.0, 1.0)) * plot_h; };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
    << escape(title) << "</text>\n";
  for (int t = 0; t <= 4; ++t) {  // y grid at 0, 0.25, ... 1
    const double y = t / 4.0;
    o << "<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << number(py(y))
      << "\" y2=\"" << number(py(y)) << "\" stroke=\"#ddd\"/>\n"
      << "<text x=\"" << left - 6 << "\" y=\"" << number(py(y) + 4) << "\" text-anchor=\"end\">"
      << y << "</text>\n";
  }
  for (double e = std::ceil(x_min); e <= x_max + 1e-9; e += 1) {  // x ticks at powers of two
    const double x = std::exp2(e);
    o << "<text x=\"" << number(px(x)) << "\" y=\"" << height - bottom + 18
      << "\" text-anchor=\"middle\">" << x << "</text>\n";
  }
  o << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 10 << "\" text-anchor=\"middle\">"
    << escape(x_label) << "</text>\n"
    << "<text transform=\"translate(16," << top + plot_h / 2
    << ") rotate(-90)\" text-anchor=\"middle\">" << escape(y_label) << "</text>\n";
  for (std::size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    o << "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" << palette(k) << "\" points=\"";
    for (const auto& [x, y] : s.points) o << number(px(x)) << "," << number(py(y)) << " ";
    o << "\"/>\n";
    const double ly = top + 16.0 * static_cast<double>(k);
    o << "<line x1=\"" << width - right + 10 << "\" x2=\"" << width - right + 30 << "\" y1=\"" << ly
      << "\" y2=\"" << ly << "\" stroke-width=\"2\" stroke=\"" << palette(k) << "\"/>\n"
      << "<text x=\"" << width - right + 36 << "\" y=\"" << ly + 4 << "\">" << escape(s.name)
      << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

/// A heatmap of m, one cell per entry, white (min) to dark blue (max); row r at the top.
/// Row and column labels are optional (empty: none).
template <class Derived>
std::string heatmap(const std::string& title, const Eigen::DenseBase<Derived>& m,
                    const std::vector<std::string>& row_labels = {},
                    const std::vector<std::string>& col_labels = {}, double cell = 12) {
  const auto rows = m.rows(), cols = m.cols();
  const double left = row_labels.empty() ? 10 : 40, top = col_labels.empty() ? 34 : 52;
  const double width = left + cell * static_cast<double>(cols) + 10;
  const double height = top + cell * static_cast<double>(rows) + 10;
  double lo = INFINITY, hi = -INFINITY;
  for (Eigen::Index r = 0; r < rows; ++r) {
    for (Eigen::Index c = 0; c < cols; ++c) {
      const double v = static_cast<double>(m(r, c));
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
  }
  if (!(lo < hi)) hi = lo + 1;
  std::ostringstream o;
  const double title_width = left + 7.5 * static_cast<double>(title.size());
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << number(std::max(width, title_width))
    << "\" height=\"" << number(height) << "\" font-family=\"monospace\" font-size=\"10\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << left << "\" y=\"16\" font-family=\"sans-serif\" font-size=\"13\">"
    << escape(title) << "</text>\n";
  for (Eigen::Index r = 0; r < rows; ++r) {
    for (Eigen::Index c = 0; c < cols; ++c) {
      const double v = static_cast<double>(m(r, c));
      const double t = std::isfinite(v) ? (v - lo) / (hi - lo) : 0.0;
      // white to #08306b: each channel moves linearly with t
      const int red = static_cast<int>(std::lround(255 - t * (255 - 8)));
      const int green = static_cast<int>(std::lround(255 - t * (255 - 48)));
      const int blue = static_cast<int>(std::lround(255 - t * (255 - 107)));
      o << "<rect x=\"" << number(left + cell * static_cast<double>(c)) << "\" y=\""
        << number(top + cell * static_cast<double>(r)) << "\" width=\"" << number(cell)
        << "\" height=\"" << number(cell) << "\" fill=\"rgb(" << red << "," << green << "," << blue
        << ")\"/>\n";
    }
  }
  for (std::size_t r = 0; r < row_labels.size() && static_cast<Eigen::Index>(r) < rows; ++r) {
    o << "<text x=\"" << left - 4 << "\" y=\""
      << number(top + cell * (static_cast<double>(r) + 0.8)) << "\" text-anchor=\"end\">"
      << escape(row_labels[r]) << "</text>\n";
  }
  for (std::size_t c = 0; c < col_labels.size() && static_cast<Eigen::Index>(c) < cols; ++c) {
    o << "<text x=\"" << number(left + cell * (static_cast<double>(c) + 0.5)) << "\" y=\""
      << top - 4 << "\" text-anchor=\"middle\">" << escape(col_labels[c]) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

/// Writes text to path; throws naming the path when it cannot.
inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  if (!f || !(f << text) || !f.flush()) throw std::runtime_error(path + ": cannot write");
}

}  // namespace relpos::svg
