#!/usr/bin/env bash
# Entrypoint of the seg_edge image (Dockerfile): apt ROS 2, then the overlay with seg_msgs
# and seg_edge_node, then the venv with rfnet, torch and onnxruntime; then the command.
set -e
# No `set -u`: the ROS setup scripts read variables that may be unset.
source /opt/ros/kilted/setup.bash
source /opt/seg_edge/install/setup.bash
source /opt/seg_edge/venv/bin/activate
# Every ROS process in the container (the node, `ros2 topic hz`, ...) gets the same Fast DDS
# transports. A value given with `docker run -e` wins; an empty one means Fast DDS defaults.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE-/opt/seg_edge/launch/fastdds_profile.xml}"
exec "$@"
