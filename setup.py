"""Builds dbp_core._C: a CUDAExtension when the installed torch has CUDA and a
CUDA toolkit is found, a CppExtension otherwise (or when DBP_FORCE_CPU=1).

    pip install torch==2.13.0 ninja && pip install -e . --no-build-isolation
"""
import glob
import os
import shutil

from setuptools import setup
from torch.utils import cpp_extension


def _extension():
    force_cpu = os.environ.get("DBP_FORCE_CPU", "") not in ("", "0")
    # torch.cuda.is_available() is False on a GPU-less build machine: decide by
    # what torch was built with and whether a toolkit is present.
    use_cuda = not force_cpu and torch_has_cuda() and find_cuda_home() is not None
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # No FMA contraction: the kernels must round exactly like the reference.
    # No errno from sqrtf: lets the compiler vectorise Box-Muller.
    cxx = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fopenmp"]
    kwargs = dict(extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "--fmad=false"]
        print(f"dbp-lab: building CUDAExtension (torch CUDA {torch_cuda_version()}, "
              f"toolkit {cpp_extension.CUDA_HOME})")
        return cpp_extension.CUDAExtension("dbp_core._C", sources, **kwargs)
    why = "DBP_FORCE_CPU set" if force_cpu else (
        "torch has no CUDA" if not torch_has_cuda() else "no CUDA toolkit found")
    print(f"dbp-lab: building CppExtension (CPU only: {why})")
    return cpp_extension.CppExtension("dbp_core._C", sources, **kwargs)


def _is_toolkit(path) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))


def find_cuda_home():
    """torch guesses CUDA_HOME from `which nvcc`; an `nvcc` wrapper script outside the toolkit
    (e.g. /usr/local/bin/nvcc) makes that /usr/local. Keep the guess only if it holds the CUDA
    headers, else try /usr/local/cuda; tell torch's build about the choice."""
    candidates = [cpp_extension.CUDA_HOME, "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.insert(1, os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    home = next((c for c in candidates if _is_toolkit(c)), None)
    if home is not None and cpp_extension.CUDA_HOME != home:
        cpp_extension.CUDA_HOME = home
        os.environ["CUDA_HOME"] = home
    return home


def torch_cuda_version():
    import torch
    return torch.version.cuda


def torch_has_cuda():
    return torch_cuda_version() is not None


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
