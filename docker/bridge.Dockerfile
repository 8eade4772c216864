# Cloud-side image: the cloud bridge (SAM refinement of hard frames, sample store) and the
# cloud tools (lifelong training, replay buffer, model publishing) on an NVIDIA GPU.
#
#   docker build -f docker/bridge.Dockerfile -t seg-bridge .
#   docker run --rm --gpus all -v /srv/sam:/sam:ro -v /etc/seg_bridge:/config:ro \
#     -v seg_bridge_data:/data seg-bridge
#
# Mounted, never built in: /sam holds the SAM checkpoint (sam_vit_h_4b8939.pth), /config the
# bridge config, the broker's CA certificate and the bridge identity's password file
# (readable by uid 10001, the container's user), /data the sample store.
#
# /config/bridge.yaml is a cloud_bridge/bridge.yaml with, for the project's broker
# (deploy/mosquitto; `python -m segwire.dev_pki` writes this section as bridge-broker.yaml):
#   storage_dir: /data
#   broker: {host: broker.lan, port: 8883, tls: true, ca_file: /config/ca.crt,
#            username: cloud.bridge, password_file: /config/password, share_group: <secret>}
#   refinement: {sam: {checkpoint: /sam/sam_vit_h_4b8939.pth, model_type: vit_h, device: cuda}}
# Replicas: run more containers with the same share_group and different bridge_id.
#
# Base: Python 3.11 like scripts/setup.sh, so the pins of requirements.txt install as tested.
# PyPI's torch wheels carry the CUDA runtime libraries themselves; the host needs only the
# NVIDIA driver and the NVIDIA Container Toolkit (`--gpus all`). A CUDA base image would add
# a second copy of those libraries and a Python the pins were not tested with.
FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# Only requirements.txt's pins, without what the cloud does not run: the ROS 2 wheels and
# colcon (robot side), rosbags (bag tools) and the test packages (deployment validators too).
COPY requirements.txt /opt/seg_bridge/requirements.txt
RUN grep -vE '^(ros-|colcon-|rosbags|pytest|hypothesis|kubernetes-validate|check-jsonschema|jsonschema)' /opt/seg_bridge/requirements.txt \
        > /opt/seg_bridge/requirements-bridge.txt \
    && python -m venv /opt/seg_bridge/venv \
    && /opt/seg_bridge/venv/bin/pip install -r /opt/seg_bridge/requirements-bridge.txt

# The repository's Python packages (.dockerignore keeps .venv, runs and weights out);
# --no-deps: everything is pinned above.
COPY . /tmp/seg_src
RUN /opt/seg_bridge/venv/bin/pip install --no-deps /tmp/seg_src \
    && rm -rf /tmp/seg_src

# Not root: the bridge needs only its storage volume, which this user owns.
RUN useradd --system --uid 10001 --create-home --home-dir /home/bridge bridge \
    && mkdir -p /data /config /sam && chown bridge:bridge /data
USER bridge
ENV PATH=/opt/seg_bridge/venv/bin:$PATH
VOLUME ["/data"]

CMD ["cloud-bridge", "--config", "/config/bridge.yaml"]
