// Schemas of the dbp custom ops. Kernels: cpu/*.cpp (CPU), cuda/*.cu (CUDA).
// The Python fallback defines the same schemas (SCHEMAS in dbp_core/ops/__init__.py);
// tests/test_ops.py checks they agree.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing dbp_core._C loads this library, which runs the registrations.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(dbp, m) {
  m.def("normal(int[] shape, int seed, int stream, Tensor uids, int step, ScalarType? dtype=None) -> Tensor");
  m.def("q_sample(Tensor x0, Tensor sqrt_ab, Tensor sqrt_1mab, int seed, int stream, Tensor uids, int step) -> Tensor");
  m.def("ddpm_step(Tensor x_t, Tensor eps, Tensor c_x, Tensor c_eps, Tensor sigma, int seed, int stream, Tensor uids, int step) -> Tensor");
  m.def("clipped_step(Tensor x_t, Tensor eps, Tensor a, Tensor b, Tensor c0, Tensor c1, Tensor sigma, int seed, int stream, Tensor uids, int step) -> Tensor");
  m.def("rbgm(Tensor g, int seed, int stream, Tensor uids, int step) -> Tensor");
}
