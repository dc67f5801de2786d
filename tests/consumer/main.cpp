// A user's first program: include the umbrella header, use a public type, print a number.
#include <relpos/relpos.hpp>

#include <iostream>

int main() {
  relpos::Tensor3<float> batch(2, 3, 4);
  batch.setConstant(1.0f);
  const float sum = relpos::item(batch, 1).sum();
  std::cout << "item sum " << sum << "\n";
  return sum == 12.0f ? 0 : 1;
}
