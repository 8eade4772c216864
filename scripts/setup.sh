#!/usr/bin/env bash
# Sets up this checkout on a fresh Debian 12 / Python 3.11 machine:
#   system packages (mosquitto and PostgreSQL for the tests, cmake, g++), .venv/ with the pinned
#   Python dependencies, and the ROS 2 packages seg_msgs + seg_edge_node built with
#   colcon and installed into .venv/ itself (nothing to source afterwards).
# Idempotent: each step is skipped when its inputs have not changed since the last run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
log() { printf '[setup] %s\n' "$*"; }
# pip's local mirror config prints a warning per package; keep real errors visible.
quiet_pip() { "$PY" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# -- 1. system packages -----------------------------------------------------------------
missing=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
# PostgreSQL server binaries: the tests start private clusters (seg_harness.local_postgres);
# the package's own cluster service is not needed and not started here.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v ip >/dev/null || missing+=(iproute2)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "[setup] need root or sudo to apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- 2. Python environment ------------------------------------------------------------------
if ! python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "[setup] the ROS 2 kilted wheels are built for CPython 3.11; python3 is $(python3 -V)" >&2
  exit 1
fi
[ -x "$PY" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }

req_files=("$ROOT/requirements.txt" "$ROOT/pyproject.toml")
gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  gpu=1
  req_files+=("$ROOT/requirements-gpu.txt")
fi
req_hash=$(hash_of "${req_files[@]}")
if [ "$(cat "$VENV/.setup-requirements" 2>/dev/null)" != "$req_hash" ]; then
  # Measured on a fresh venv: 6.5 GB installed (torch's CUDA libraries are most of it; there is
  # no CPU torchvision on PyPI to pair with a CPU torch), 6.9 GB at the peak of the install.
  need_gb=8
  free_gb=$(df -Pk "$VENV" | awk 'NR==2 {print int($4 / 1048576)}')
  if [ ! -d "$VENV/lib/python3.11/site-packages/torch" ] && [ "$free_gb" -lt "$need_gb" ]; then
    echo "[setup] the Python packages need about $need_gb GB of free disk under $VENV; it has $free_gb GB." >&2
    echo "[setup] Free some space there (or clone the project onto a larger disk) and run this again." >&2
    exit 1
  fi
  log "installing pinned Python packages (first run: a few minutes, about 6.5 GB)"
  # No pip cache: it would keep another 3 GB of wheels that only a requirements change reuses.
  quiet_pip install -q --no-cache-dir --upgrade pip
  quiet_pip install -q --no-cache-dir -r "$ROOT/requirements.txt"
  [ $gpu = 1 ] && { log "GPU found: installing requirements-gpu.txt"; quiet_pip install -q --no-cache-dir -r "$ROOT/requirements-gpu.txt"; }
  quiet_pip install -q --no-cache-dir --no-deps -e "$ROOT"
  # The message wheels' CMake exports name the wheel builder's include dirs.
  "$PY" "$ROOT/scripts/fix_ros_wheel_cmake_paths.py" "$VENV"
  rm -f "$VENV/.setup-ros-packages"   # rebuild against the new wheels
  echo "$req_hash" > "$VENV/.setup-requirements"
else
  log "Python packages up to date"
fi

# -- 3. ROS 2 packages ------------------------------------------------------------------------
# launch/ too: seg_edge_node installs its launch file, parameter files and DDS configurations.
src_hash=$(cd "$ROOT" && find ros2_ws/src launch -type f -not -path '*/__pycache__/*' -print0 | sort -z \
           | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.setup-ros-packages" 2>/dev/null)" != "$src_hash" ]; then
  log "building seg_msgs and seg_edge_node with colcon into .venv"
  # colcon (through setuptools' build/lib) copies the Python package over the old one: a
  # module removed from the source would stay importable from .venv and hide a stale import.
  rm -rf "$VENV"/lib/python3.11/site-packages/seg_edge_node "$ROOT"/build/colcon/seg_edge_node
  (
    export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    cd "$ROOT"
    colcon --log-base build/colcon-log build --base-paths ros2_ws/src --build-base build/colcon \
      --install-base "$VENV" --merge-install \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
      --event-handlers console_cohesion- summary+ status- 2>&1 \
      | { grep -v "doesn't contain any 'local_setup" || true; }
  )
  echo "$src_hash" > "$VENV/.setup-ros-packages"
else
  log "ROS 2 packages up to date"
fi
log "ready: run the node with $VENV/lib/seg_edge_node/seg_edge_node --ros-args --params-file launch/edge_params.yaml"
