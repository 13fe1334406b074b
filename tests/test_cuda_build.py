"""Every cuda/*.cu compiles with nvcc and the binding with the C++ compiler, even on a CPU-only machine.

The kernels cannot run here, but a kernel that does not compile fails the suite. The binding is
checked against the CPU build of torch's headers (it needs only torch/extension.h) with the flags
torch.utils.cpp_extension would use; parsing those headers takes g++ some 25 s of CPU.
"""

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import include_paths

CUDA_DIR = Path(__file__).resolve().parents[1] / "cuda"
# Ampere (A100, RTX 30xx) and Hopper (H100): the kernel uses nothing newer than sm_80 atomics
ARCHS = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]


def compiler(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not on PATH, so cuda/ cannot be compile-checked here")
    return path


def run(cmd: list) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("source", sorted(CUDA_DIR.glob("*.cu")), ids=lambda p: p.name)
def test_kernel_compiles_with_nvcc(source, tmp_path):
    run([compiler("nvcc"), "-c", str(source), "-o", str(tmp_path / "kernel.o"), "-O3", "-std=c++17", *ARCHS])


@pytest.mark.parametrize("source", sorted(CUDA_DIR.glob("*.cpp")), ids=lambda p: p.name)
def test_binding_compiles_against_torch_headers(source):
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{p}" for p in [*include_paths(), sysconfig.get_paths()["include"]]]
    flags = ["-std=c++20", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    run([compiler("g++"), "-fsyntax-only", *flags, "-DTORCH_EXTENSION_NAME=sds3d_hashgrid", *includes, str(source)])


def test_cuda_dir_holds_a_kernel_and_a_binding():
    assert list(CUDA_DIR.glob("*.cu")) and list(CUDA_DIR.glob("*.cpp"))
