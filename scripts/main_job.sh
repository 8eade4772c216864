#!/usr/bin/env bash
# The main job (see README.md): sets up the machine if needed, then runs seg_eval.main_job.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
# shellcheck source=scripts/ros_env.sh
source "$ROOT/scripts/ros_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m seg_eval.main_job "$@"
