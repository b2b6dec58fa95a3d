#!/usr/bin/env bash
# Run the test suite as on an x86 CPU without AVX-512 (AVX2 only, e.g. an AMD EPYC before Zen 4), on any x86 CPU
# that has AVX2. llama.cpp is the one dependency compiled for the machine it is built on (-march=native), so this
# builds llama-cpp-python once with AVX-512 off into .cache/avx2site/ (about 10 minutes on 2 cores) and puts it first
# on the path; torch, numpy (and its OpenBLAS) and faiss pick their kernels at run time and are told to stop at AVX2.
# Usage: scripts/test_as_avx2.sh [pytest args]   (default: the default suite, as `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=.cache/avx2site
VERSION=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
if [ ! -f "$SITE/.built-$VERSION" ]; then
  rm -rf "$SITE"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DLLAVA_BUILD=OFF" \
    .venv/bin/pip install -q --no-deps --no-cache-dir --target "$SITE" "llama-cpp-python==$VERSION"
  touch "$SITE/.built-$VERSION"
fi
export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
export ATEN_CPU_CAPABILITY=avx2 FAISS_OPT_LEVEL=avx2 OPENBLAS_CORETYPE=Haswell
# numpy >= 2.4 names its x86 levels X86_V2..V4; AVX-512 is X86_V4 and the groups above it
export NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
.venv/bin/python -c "import llama_cpp, torch; info = llama_cpp.llama_print_system_info().decode(); \
assert 'AVX512' not in info, info; print('llama.cpp:', info.strip()); print('torch:', torch.backends.cpu.get_cpu_capability())"
exec .venv/bin/pytest -q "$@"
