// Tests for include/relpos/core.hpp: the batch layout is PyTorch's batch_first, row-major.
#include <relpos/core.hpp>

#include <gtest/gtest.h>

namespace {

TEST(Core, ItemViewsAreRowMajorSlicesOfTheBatch) {
  relpos::Tensor3<float> batch(2, 3, 4);
  for (relpos::Index i = 0; i < batch.size(); ++i) batch.data()[i] = static_cast<float>(i);
  // torch.arange(24).reshape(2, 3, 4)[1, 2, 3] == 23 and [1, 0, 1] == 13
  const auto second = relpos::item(batch, 1);
  EXPECT_EQ(second.rows(), 3);
  EXPECT_EQ(second.cols(), 4);
  EXPECT_EQ(second(2, 3), 23.0f);
  EXPECT_EQ(second(0, 1), 13.0f);
  EXPECT_EQ(&second(0, 0), batch.data() + 12);
}

TEST(Core, ErrorCarriesItsMessage) {
  try {
    throw relpos::Error("x.weight: expected [2, 3], got [3, 2]");
  } catch (const relpos::Error& e) {
    EXPECT_STREQ(e.what(), "x.weight: expected [2, 3], got [3, 2]");
  }
}

}  // namespace
