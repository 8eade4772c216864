"""The decisions of launch/edge.launch.py, without the launch package (which is not on PyPI),
so they are tested here: argument parsing, parameter overrides, the DDS environment."""
from __future__ import annotations

import os

# Launch arguments that map one-to-one onto string parameters of the node.
STRING_OVERRIDES = ("model_path", "backend", "precision", "rgb_topic", "depth_topic", "cache_dir")
# Launch arguments for the uplink's per-robot settings (no dots in launch argument names).
# robot_id is also the MQTT username: the project's broker ACL (deploy/mosquitto) lets a
# robot use only the topics of the name it logged in with.
UPLINK_OVERRIDES = {"uplink_host": ("uplink.host",), "robot_id": ("uplink.robot_id", "uplink.username")}
RMW = {"fastdds": "rmw_fastrtps_cpp", "cyclonedds": "rmw_cyclonedds_cpp"}


def bool_arg(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise RuntimeError(f"launch argument {name}:={text!r}: use true or false")


def existing_file(name: str, text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        # Fast DDS only logs a missing profile and carries on with its defaults, and
        # launch_ros only warns about a missing parameter file: stop here instead.
        raise RuntimeError(f"launch argument {name}:={text!r}: no such file")
    return path


def parameter_overrides(args: dict[str, str]) -> dict[str, object]:
    """Launch arguments given a non-empty value -> node parameters (empty: the YAML files decide)."""
    given: dict[str, object] = {name: args[name] for name in STRING_OVERRIDES if args.get(name)}
    given.update({parameter: args[name] for name, parameters in UPLINK_OVERRIDES.items() if args.get(name)
                  for parameter in parameters})
    if args.get("use_depth"):
        given["use_depth"] = bool_arg("use_depth", args["use_depth"])
    return given


def dds_environment(rmw: str, fastdds_profile: str, cyclonedds_config: str) -> dict[str, str]:
    """The node's DDS environment for `rmw` (fastdds | cyclonedds) and its configuration file."""
    if rmw not in RMW:
        raise RuntimeError(f"launch argument rmw:={rmw!r}: use {' or '.join(RMW)}")
    if rmw == "cyclonedds":
        env = {"RMW_IMPLEMENTATION": RMW[rmw]}
        if cyclonedds_config:
            env["CYCLONEDDS_URI"] = "file://" + existing_file("cyclonedds_config", cyclonedds_config)
        return env
    # Set even when empty: an empty FASTDDS_DEFAULT_PROFILES_FILE means Fast DDS's
    # defaults, and it hides a profile exported by the caller (the image's entrypoint).
    return {"RMW_IMPLEMENTATION": RMW[rmw], "FASTDDS_DEFAULT_PROFILES_FILE":
            existing_file("fastdds_profile", fastdds_profile) if fastdds_profile else ""}
