// A user's first program: include the umbrella header, use a public type, print a number.
// Built with relpos's BLAS option on (RELPOS_CONSUMER_EXPECT_BLAS), it also proves that
// relpos::relpos carried the define and the link: a product runs through the CBLAS and
// matches a plain loop.
#include <relpos/relpos.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>

#if defined(RELPOS_CONSUMER_EXPECT_BLAS) != defined(RELPOS_USE_CBLAS)
#error "relpos::relpos must define RELPOS_USE_CBLAS exactly when relpos was built with RELPOS_BLAS"
#endif

int main() {
  relpos::Tensor3<float> batch(2, 3, 4);
  batch.setConstant(1.0f);
  const float sum = relpos::item(batch, 1).sum();
  std::cout << "relpos " << RELPOS_VERSION_MAJOR << "." << RELPOS_VERSION_MINOR << "."
            << RELPOS_VERSION_PATCH << ", item sum " << sum << "\n";
  if (sum != 12.0f) return 1;

  // c = a · bᵀ through the library's GEMM route (cblas_sgemm when the option is on, which
  // would not link without the library), against a plain triple loop
  const relpos::Matrix<float> a = relpos::Matrix<float>::Random(70, 40);  // (m, k)
  const relpos::Matrix<float> b = relpos::Matrix<float>::Random(50, 40);  // (n, k)
  relpos::Matrix<float> c(70, 50);                                        // (m, n)
  relpos::detail::matmul_nt<float>(a, b, c);
  double worst = 0;
  for (relpos::Index i = 0; i < c.rows(); ++i) {
    for (relpos::Index j = 0; j < c.cols(); ++j) {
      double ref = 0;
      for (relpos::Index p = 0; p < a.cols(); ++p) ref += double(a(i, p)) * double(b(j, p));
      worst = std::max(worst, std::abs(ref - double(c(i, j))));
    }
  }
#if defined(RELPOS_USE_CBLAS)
  std::cout << "products through the CBLAS, ";
#endif
  std::cout << "max |c - reference| " << worst << "\n";
  return worst < 1e-4 ? 0 : 1;
}
