"""Start seg_edge_node (RFNet segmentation on the robot) with this directory's parameters.

The parameters come from edge_params.yaml next to this file, or from params_file:=, with
overlay_params_file:= layered over it (e.g. edge_tls_params.yaml: the uplink to a TLS
broker with the robot's credentials). A launch argument overrides its parameter only when
it is given a non-empty value, so the YAML files hold the defaults. model_path and cache_dir default to
$SEG_EDGE_MODEL_PATH and $SEG_EDGE_CACHE_DIR where those are set (the Dockerfile's
image sets SEG_EDGE_CACHE_DIR=/cache).

Usage:
  ros2 launch /path/to/launch/edge.launch.py model_path:=/models/pretrain_model.pth
  ros2 launch launch/edge.launch.py model_path:=/models/rfnet.onnx use_depth:=false \\
      rgb_topic:=/front_camera/color/image_raw namespace:=dog1
  ros2 launch launch/edge.launch.py model_path:=/models/pretrain_model.pth \\
      backend:=tensorrt params_file:=/etc/seg_edge/params.yaml fastdds_profile:=
  ros2 launch launch/edge.launch.py model_path:=/models/rfnet.onnx \\
      overlay_params_file:=/etc/seg_edge/edge_tls_params.yaml robot_id:=dog1 uplink_host:=broker.lan
  ros2 launch launch/edge.launch.py --show-args
"""
import os
import tempfile

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_NAME = 'seg_edge_node'

# Launch arguments that map one-to-one onto string parameters of the node.
STRING_OVERRIDES = ('model_path', 'backend', 'rgb_topic', 'depth_topic', 'cache_dir')
# Launch arguments for the uplink's per-robot settings (no dots in launch argument names).
# robot_id is also the MQTT username: the project's broker ACL (deploy/mosquitto) lets a
# robot use only the topics of the name it logged in with.
UPLINK_OVERRIDES = {'uplink_host': ('uplink.host',), 'robot_id': ('uplink.robot_id', 'uplink.username')}


def _bool_arg(name, text):
    value = text.strip().lower()
    if value in ('true', '1', 'yes', 'on'):
        return True
    if value in ('false', '0', 'no', 'off'):
        return False
    raise RuntimeError(f'launch argument {name}:={text!r}: use true or false')


def _existing_file(name, text):
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        # Fast DDS only logs a missing profile and carries on with its defaults, and
        # launch_ros only warns about a missing parameter file: stop here instead.
        raise RuntimeError(f'launch argument {name}:={text!r}: no such file')
    return path


def _node_namespace(context, namespace):
    """The namespace launch_ros will give the node: ours, under any pushed ros_namespace."""
    if namespace.startswith('/'):
        return '/' + namespace.strip('/')
    parts = [context.launch_configurations.get('ros_namespace', ''), namespace]
    return '/' + '/'.join(p.strip('/') for p in parts if p.strip('/'))


def _params_file_for(params_file, node_fqn):
    """params_file, or a copy whose `seg_edge_node:` section is keyed by node_fqn.

    ROS matches a section key without a leading slash against /<key> only, so
    `seg_edge_node:` would silently not apply to /<namespace>/seg_edge_node.
    """
    if node_fqn == '/' + NODE_NAME:
        return params_file
    with open(params_file, encoding='utf-8') as f:
        sections = yaml.safe_load(f) or {}
    rewritten = {}
    for key, section in sections.items():
        target = node_fqn if str(key).strip('/') == NODE_NAME else key
        # Merged, not replaced, in case the file also has a section under node_fqn.
        rewritten.setdefault(target, {'ros__parameters': {}})['ros__parameters'].update(
            (section or {}).get('ros__parameters') or {})
    with tempfile.NamedTemporaryFile('w', prefix='seg_edge_params_', suffix='.yaml',
                                     delete=False, encoding='utf-8') as f:
        yaml.safe_dump(rewritten, f, default_flow_style=False)
        return f.name


def _launch_node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    namespace = arg('namespace')
    node_fqn = _node_namespace(context, namespace).rstrip('/') + '/' + NODE_NAME
    params_files = [_params_file_for(_existing_file('params_file', arg('params_file')), node_fqn)]
    if arg('overlay_params_file'):
        params_files.append(_params_file_for(
            _existing_file('overlay_params_file', arg('overlay_params_file')), node_fqn))

    given = {name: arg(name) for name in STRING_OVERRIDES if arg(name)}
    given.update({parameter: arg(name) for name, parameters in UPLINK_OVERRIDES.items() if arg(name)
                  for parameter in parameters})
    if arg('use_depth'):
        given['use_depth'] = _bool_arg('use_depth', arg('use_depth'))
    # Strings typed explicitly: launch_ros would otherwise read them as YAML, so a value
    # such as "123" or "true" would reach the node as a number or a bool.
    overrides = {name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
                 for name, value in given.items()}

    # Set even when empty: an empty FASTDDS_DEFAULT_PROFILES_FILE means Fast DDS's
    # defaults, and it hides a profile exported by the caller (the image's entrypoint).
    profile = arg('fastdds_profile')
    fastdds_profile = _existing_file('fastdds_profile', profile) if profile else ''

    return [
        LogInfo(msg=f'{node_fqn}: parameters from {" over ".join(reversed(params_files))}, overridden by {given}; '
                    f'Fast DDS profile: {fastdds_profile or "middleware defaults"}'),
        Node(
            package='seg_edge_node',
            executable='seg_edge_node',
            name=NODE_NAME,
            namespace=namespace or None,
            # Later entries win: the overlay overrides the file, the launch arguments both.
            parameters=params_files + [overrides] if overrides else params_files,
            output='screen',
            emulate_tty=True,
            respawn=_bool_arg('respawn', arg('respawn') or 'false'),
            respawn_delay=2.0,
            additional_env={'FASTDDS_DEFAULT_PROFILES_FILE': fastdds_profile},
        ),
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(HERE, 'edge_params.yaml'),
            description='YAML file with the seg_edge_node parameters (the defaults)'),
        DeclareLaunchArgument(
            'overlay_params_file', default_value='',
            description='YAML file layered over params_file, e.g. edge_tls_params.yaml (uplink over '
                        'TLS with the robot\'s credentials); empty: none'),
        DeclareLaunchArgument(
            'robot_id', default_value='',
            description='uplink.robot_id and uplink.username (the broker identity); empty: the params files'),
        DeclareLaunchArgument(
            'uplink_host', default_value='',
            description='uplink.host, the MQTT broker; empty: the params files (empty there: no uplink)'),
        DeclareLaunchArgument(
            'model_path', default_value=EnvironmentVariable('SEG_EDGE_MODEL_PATH', default_value=''),
            description='Ianvs/RFNet .pth checkpoint or exported .onnx; required to serve. '
                        'Empty: $SEG_EDGE_MODEL_PATH, else the params file'),
        DeclareLaunchArgument(
            'backend', default_value='',
            description='onnxruntime | tensorrt | torch; empty: the params file '
                        '(onnxruntime in edge_params.yaml)'),
        DeclareLaunchArgument(
            'rgb_topic', default_value='',
            description='sensor_msgs/Image (or CompressedImage) topic; empty: the params file'),
        DeclareLaunchArgument(
            'depth_topic', default_value='',
            description='Depth image topic aligned to the RGB camera; empty: the params file'),
        DeclareLaunchArgument(
            'use_depth', default_value='',
            description='true: RGB-D model, false: RGB-only; empty: the params file'),
        DeclareLaunchArgument(
            'cache_dir', default_value=EnvironmentVariable('SEG_EDGE_CACHE_DIR', default_value=''),
            description='Where exported ONNX models and TensorRT engines are cached. '
                        'Empty: $SEG_EDGE_CACHE_DIR, else the params file'),
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='ROS namespace of the node (and of its relative topic names)'),
        DeclareLaunchArgument(
            'fastdds_profile', default_value=os.path.join(HERE, 'fastdds_profile.xml'),
            description='Fast DDS XML profile for the node; empty: the middleware defaults'),
        DeclareLaunchArgument(
            'respawn', default_value='false',
            description='Restart the node 2 s after it exits (also after a startup error)'),
        OpaqueFunction(function=_launch_node),
    ])
