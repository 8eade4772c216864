# Environment for running the project's ROS 2 processes from .venv (sourced, not run).
# Discovery stays on this machine and camera-sized messages use a 16 MB shared-memory
# segment (launch/fastdds_profile.xml); ROS logs go under the run's own ROS_HOME.
_seg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$_seg_root/.venv/bin:$_seg_root/.venv/lib/seg_edge_node:$PATH"
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$_seg_root/launch/fastdds_profile.xml}
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
unset _seg_root
