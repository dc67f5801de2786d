// Tests for examples/support/svg.hpp, the demo's picture writer: well-formed, escaped, and
// each value lands where and in the color the scale says.
#include "../examples/support/svg.hpp"

#include <regex>
#include <string>

#include <gtest/gtest.h>

namespace {

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

TEST(Svg, EscapesUserText) {
  EXPECT_EQ(relpos::svg::escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
}

TEST(Svg, HeatmapHasOneCellPerEntryWithMinWhiteAndMaxDark) {
  Eigen::MatrixXd m(2, 3);
  m << 0, 1, 2, 3, 4, 5;
  const std::string svg = relpos::svg::heatmap("t<1>", m);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("t&lt;1&gt;"), std::string::npos);
  EXPECT_EQ(count(svg, "fill=\"rgb("), 6u);
  EXPECT_EQ(count(svg, "fill=\"rgb(255,255,255)\""), 1u);  // the minimum, 0
  EXPECT_EQ(count(svg, "fill=\"rgb(8,48,107)\""), 1u);     // the maximum, 5
  // 2.5 is halfway: each channel halfway between white and the dark end (rounded)
  Eigen::MatrixXd half(1, 3);
  half << 0, 2.5, 5;
  EXPECT_NE(relpos::svg::heatmap("", half).find("rgb(132,152,181)"), std::string::npos);
}

TEST(Svg, LineChartMapsAccuracyOneToTheTopAndZeroToTheBottom) {
  const std::string svg = relpos::svg::line_chart_log2x(
      "acc", "len", "accuracy", {{"a", {{16, 1.0}, {64, 0.0}}}, {"b", {{16, 0.5}, {64, 0.5}}}});
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  // plot area: top 40, height 400 − 40 − 50 = 310; x from 60 over 640 − 60 − 150 = 430
  EXPECT_NE(svg.find("points=\"60.00,40.00 490.00,350.00 \""), std::string::npos) << svg;
  EXPECT_NE(svg.find("points=\"60.00,195.00 490.00,195.00 \""), std::string::npos);
  EXPECT_THROW(relpos::svg::line_chart_log2x("", "", "", {{"z", {{0, 1}}}}), std::invalid_argument);
}

}  // namespace
