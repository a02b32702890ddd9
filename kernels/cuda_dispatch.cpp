#include "kernels/cuda_dispatch.h"

namespace calibq::kernels {

bool cuda_available() {
#ifdef CALIBQ_WITH_CUDA
  return at::hasCUDA();
#else
  return false;
#endif
}

}  // namespace calibq::kernels
