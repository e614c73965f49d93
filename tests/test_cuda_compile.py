"""Compile-check the CUDA kernels with nvcc, without a GPU and without a CUDA build of torch.

Every csrc/cuda/*.cu file is compiled (`nvcc -c`, object code only, nothing is linked or run)
against the headers of the installed torch. This catches CUDA compile errors on machines that
can only build the CPU extension. Skipped when nvcc is not found.
"""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
CU_FILES = sorted((CSRC / "cuda").glob("*.cu"))
COMPILE_TIMEOUT_S = 300


def find_nvcc():
    """nvcc of CUDA_HOME, else of /usr/local/cuda, else the first on PATH."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            nvcc = Path(home) / "bin" / "nvcc"
            if nvcc.is_file() and os.access(nvcc, os.X_OK):
                return str(nvcc)
    return shutil.which("nvcc")


NVCC = find_nvcc()


def nvcc_command(cu_file, obj_file):
    from torch.utils.cpp_extension import include_paths

    includes = [*include_paths(), sysconfig.get_paths()["include"], str(CSRC)]
    return [
        NVCC,
        *(f"-I{path}" for path in includes),
        # CPU wheels of torch lack the generated c10/cuda/impl/cuda_cmake_macros.h.
        "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
        "-DNEURALODE_WITH_CUDA",
        "--expt-relaxed-constexpr",
        "-std=c++20",
        "-Xcompiler", "-fPIC",
        "-gencode", "arch=compute_90,code=sm_90",
        "-c", str(cu_file),
        "-o", str(obj_file),
    ]


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (no CUDA_HOME, /usr/local/cuda or nvcc on PATH)")
@pytest.mark.skipif(not CU_FILES, reason="no csrc/cuda/*.cu files to compile")
@pytest.mark.parametrize("cu_file", CU_FILES, ids=[f.name for f in CU_FILES])
def test_nvcc_compiles(cu_file, tmp_path):
    cmd = nvcc_command(cu_file, tmp_path / "x.o")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nvcc did not finish compiling {cu_file.name} within {COMPILE_TIMEOUT_S} s")
    if proc.returncode != 0:
        pytest.fail(
            f"nvcc failed to compile {cu_file.relative_to(ROOT)} (exit {proc.returncode}):\n"
            f"{proc.stderr}{proc.stdout}\ncommand: {' '.join(cmd)}",
            pytrace=False,
        )
