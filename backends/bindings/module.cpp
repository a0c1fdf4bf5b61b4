#include <nanobind/nanobind.h>
namespace nb = nanobind;
NB_MODULE(_fbck, m) {
  m.doc() = "FBCK: fast bitwise computation kernels for binarize";
  m.def("version", []() { return 1; });
}
