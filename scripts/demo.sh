#!/usr/bin/env bash
# The main job (see README.md): sets up the machine if needed, then runs scripts/demo.py.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
# shellcheck source=scripts/ros_env.sh
source "$ROOT/scripts/ros_env.sh"
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/demo.py" "$@"
