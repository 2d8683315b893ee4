#!/usr/bin/env bash
# Build and install horovod 0.28.1 (PyTorch + Gloo, CPU, no MPI/TensorFlow/MXNet) into the
# current Python, for `training.distributed.framework: horovod`.
#
# horovod 0.28.1 is the last release, and its C++ is compiled as C++14 while PyTorch >= 2.1
# headers need C++17: so the sdist is patched (C++ standard 14 -> 17 in the top-level
# CMakeLists.txt and horovod/torch/CMakeLists.txt, gloo's -std=c++11 -> -std=c++17) and built
# from source. Needs cmake, a C++17 compiler (g++ >= 9) and torch already installed.
#
#   PYTHON=/path/to/python scripts/install-horovod.sh     (default: python3 on PATH)
#
# Takes several minutes the first time (it compiles gloo and horovod's core); later venvs on the
# same machine reuse the wheel (below).
set -euo pipefail

# The build tools first, before anything is downloaded: one line naming every one missing.
missing="" packages=""
command -v cmake >/dev/null 2>&1 || { missing="cmake"; packages="cmake"; }
command -v "${CXX:-g++}" >/dev/null 2>&1 || { missing="${missing:+$missing and }a C++ compiler (${CXX:-g++})"; packages="${packages:+$packages }g++"; }
if [[ -n "$missing" ]]; then
    echo "install-horovod: building horovod needs $missing, not found on PATH: install with 'apt-get install $packages' (Debian/Ubuntu, as root)" >&2
    exit 1
fi

PYTHON="${PYTHON:-python3}"
case "$PYTHON" in  # a relative path must survive the cd into the build folder below
  */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;;
esac
VERSION="0.28.1"

"$PYTHON" -c "import torch" 2>/dev/null || { echo "install-horovod: install torch first (pip install 'dagsmith[train]')" >&2; exit 1; }

# The built wheel is kept in the user's cache, keyed by everything its binary depends on (this
# script, torch's version, the Python tag, the compiler): a second venv on the same machine
# installs it in seconds instead of compiling again for ~10 minutes. Delete the folder to rebuild.
# DAGSMITH_HOROVOD_CACHE=off always builds.
script_sum="$(sha256sum "$0" | cut -c1-16)"
abi="$("$PYTHON" -c 'import sys, torch; print(f"torch{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}")')"
cxx_version="$("${CXX:-g++}" -dumpfullversion 2>/dev/null || echo unknown)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/dagsmith/horovod-${VERSION}-${abi}-gcc${cxx_version}-${script_sum}"
verify() {
    cd /
    "$PYTHON" -c "import horovod.torch as hvd; print('horovod', hvd.__version__ if hasattr(hvd, '__version__') else '', 'gloo built:', hvd.gloo_built())"
}
if [[ "${DAGSMITH_HOROVOD_CACHE:-on}" != off ]] && compgen -G "$cache/horovod-${VERSION}-*.whl" >/dev/null; then
    echo "install-horovod: installing the wheel built before, from $cache"
    "$PYTHON" -m pip install "$cache"/horovod-${VERSION}-*.whl
    verify
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

"$PYTHON" -m pip download --no-binary :all: --no-deps "horovod==${VERSION}" -d .
tar xzf "horovod-${VERSION}.tar.gz"
cd "horovod-${VERSION}"

# C++14 -> C++17 (PyTorch's headers need it).
sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' CMakeLists.txt horovod/torch/CMakeLists.txt
sed -i 's/-std=c++11 -fPIC/-std=c++17 -fPIC/' third_party/gloo/CMakeLists.txt
grep -q 'CMAKE_CXX_STANDARD 17' CMakeLists.txt
grep -q 'CMAKE_CXX_STANDARD 17' horovod/torch/CMakeLists.txt
grep -q -- '-std=c++17 -fPIC' third_party/gloo/CMakeLists.txt

# Build dependencies the no-isolation build uses from the current environment.
"$PYTHON" -m pip install wheel packaging

HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo MAKEFLAGS="-j$(nproc)" \
    "$PYTHON" -m pip wheel --no-build-isolation --no-cache-dir --no-deps -v . -w "$work/wheel"
"$PYTHON" -m pip install "$work"/wheel/horovod-${VERSION}-*.whl

# Into the cache only once it imports; written beside, then renamed, so a build cut short
# never leaves a half wheel that a later run would take.
verify
if [[ "${DAGSMITH_HOROVOD_CACHE:-on}" != off ]]; then
    mkdir -p "$(dirname "$cache")"
    partial="$(mktemp -d "$(dirname "$cache")/.partial.XXXXXX")"
    cp "$work"/wheel/horovod-${VERSION}-*.whl "$partial"/
    mv -T "$partial" "$cache" 2>/dev/null || rm -rf "$partial"
fi
