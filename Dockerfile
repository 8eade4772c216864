# Robot-side image: seg_edge_node (RFNet segmentation on camera topics) on ROS 2 kilted.
#
#   docker build -t seg-edge:kilted .
#   docker run --rm --network host --ipc host \
#     -v /srv/models:/models:ro -v seg_edge_cache:/cache \
#     seg-edge:kilted \
#     ros2 launch /opt/seg_edge/launch/edge.launch.py model_path:=/models/pretrain_model.pth
#
# or `-e SEG_EDGE_MODEL_PATH=/models/pretrain_model.pth` and the default command.
# Over TLS to the project's broker (README, "Deployment"): also mount the robot's CA
# certificate and password file (-v /etc/seg_edge/mqtt:/etc/seg_edge/mqtt:ro) and add
#   overlay_params_file:=/opt/seg_edge/launch/edge_tls_params.yaml robot_id:=dog1 uplink_host:=broker.lan
# The cloud side's image is docker/bridge.Dockerfile.
# --network host and --ipc host: the camera driver's DDS discovery has to reach the node, and
# Fast DDS shared memory (16 MB segments, launch/fastdds_profile.xml) needs the host's /dev/shm.
#
# Installs like scripts/setup.sh, except that ROS 2 comes from the base image's apt packages
# (CPython 3.12) instead of the PyPI ros-* wheels (CPython 3.11).
#
# Not here yet: an NVIDIA image for the tensorrt backend (an nvcr.io TensorRT base with ROS 2
# added, plus requirements-gpu.txt). This image serves with onnxruntime or torch on the CPU.
FROM ros:kilted-ros-base

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# ros-base already has colcon and a compiler, and through ros_core rclpy, launch_ros and
# common_interfaces (sensor_msgs, std_msgs, diagnostic_msgs), so only the venv module and
# the headers that seg_msgs' Python C extensions compile against are missing. Not rosdep:
# it would add apt's python3-opencv and NumPy 1, which the venv replaces anyway.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# --system-site-packages: rclpy, launch and colcon are apt packages outside the venv. The
# venv's NumPy 2 shadows apt's NumPy 1; the ROS message extensions built against NumPy 1
# still work, as their generated code uses only array-struct macros (PyArray_NDIM, _TYPE,
# _GETPTR1), whose layout NumPy 2 kept.
RUN python3 -m venv --system-site-packages /opt/seg_edge/venv

# torch alone first, from the PyTorch CPU index, so that PyPI's build and its CUDA wheels
# (gigabytes the CPU backends never load) stay out. The second install finds torch==2.14.1
# satisfied by 2.14.1+cpu and takes torch's own dependencies from PyPI.
# TORCH_INDEX_URL=https://pypi.org/simple gives PyPI's CUDA build instead.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY requirements-edge.txt /opt/seg_edge/requirements-edge.txt
RUN /opt/seg_edge/venv/bin/pip install --no-deps --index-url "$TORCH_INDEX_URL" \
        "$(grep -E '^torch==' /opt/seg_edge/requirements-edge.txt)" \
    && /opt/seg_edge/venv/bin/pip install -r /opt/seg_edge/requirements-edge.txt

# The repository itself (.dockerignore keeps .venv, runs and weights out): `pip install .`
# puts in what pyproject.toml packages (rfnet, segwire, durable_files, cloud_bridge), as
# setup.sh's `pip install -e` does; --no-deps keeps the bridge's SAM stack out of the image.
# colcon is started with the venv's interpreter because its ament_python builds write
# sys.executable into the node's launcher script: with /usr/bin/python3 there the node
# would not find torch, onnxruntime or rfnet.
COPY . /tmp/seg_edge_src
RUN cd /tmp/seg_edge_src \
    && /opt/seg_edge/venv/bin/pip install --no-deps . \
    && source /opt/ros/kilted/setup.bash \
    && /opt/seg_edge/venv/bin/python -c 'import sys; from colcon_core.command import main; sys.exit(main())' \
        --log-base /tmp/colcon/log build --base-paths ros2_ws/src --build-base /tmp/colcon/build \
        --merge-install --install-base /opt/seg_edge/install \
        --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE=/opt/seg_edge/venv/bin/python \
        --event-handlers console_cohesion+ \
    && cp -r launch /opt/seg_edge/launch \
    && install -m 755 docker/edge_entrypoint.sh /opt/seg_edge/edge_entrypoint.sh \
    && rm -rf /tmp/seg_edge_src /tmp/colcon

# Checkpoints are mounted, never built in. /cache keeps the ONNX exported from a .pth across
# container restarts, so a restart skips the export (edge.launch.py reads SEG_EDGE_CACHE_DIR).
ENV SEG_EDGE_CACHE_DIR=/cache
VOLUME ["/models", "/cache"]

ENTRYPOINT ["/opt/seg_edge/edge_entrypoint.sh"]
CMD ["ros2", "launch", "/opt/seg_edge/launch/edge.launch.py"]
