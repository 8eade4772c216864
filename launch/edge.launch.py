"""Start seg_edge_node (RFNet segmentation on the robot) with this directory's parameters.

Installed with the package (share/seg_edge_node/launch/, next to the parameter files and
DDS configurations), so on a ROS 2 install:

  ros2 launch seg_edge_node edge.launch.py model_path:=/models/pretrain_model.pth
  ros2 launch seg_edge_node edge.launch.py model_path:=/models/rfnet.onnx use_depth:=false \\
      rgb_topic:=/front_camera/color/image_raw namespace:=dog1
  ros2 launch seg_edge_node edge.launch.py model_path:=/models/pretrain_model.pth \\
      backend:=tensorrt precision:=int8 params_file:=/etc/seg_edge/params.yaml rmw:=cyclonedds
  ros2 launch seg_edge_node edge.launch.py model_path:=/models/rfnet.onnx \\
      overlay_params_file:=/etc/seg_edge/edge_tls_params.yaml robot_id:=dog1 uplink_host:=broker.lan
  ros2 launch seg_edge_node edge.launch.py --show-args

The parameters come from edge_params.yaml next to this file, or from params_file:=, with
overlay_params_file:= layered over it (e.g. edge_tls_params.yaml: the uplink to a TLS
broker with the robot's credentials). Both are keyed `/**`, so they apply under any
namespace. A launch argument overrides its parameter only when it is given a non-empty
value, so the YAML files hold the defaults. model_path and cache_dir default to
$SEG_EDGE_MODEL_PATH and $SEG_EDGE_CACHE_DIR where those are set (the Dockerfile's image
sets SEG_EDGE_CACHE_DIR=/cache). The argument logic is seg_edge_node.launch_support.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from seg_edge_node.launch_support import bool_arg, dds_environment, existing_file, parameter_overrides

HERE = os.path.dirname(os.path.abspath(__file__))
ARGUMENTS = {
    'params_file': (os.path.join(HERE, 'edge_params.yaml'), 'YAML file with the seg_edge_node parameters'),
    'overlay_params_file': ('', 'YAML file layered over params_file, e.g. edge_tls_params.yaml (uplink over '
                                'TLS with the robot\'s credentials); empty: none'),
    'robot_id': ('', 'uplink.robot_id and uplink.username (the broker identity); empty: the params files'),
    'uplink_host': ('', 'uplink.host, the MQTT broker; empty: the params files (empty there: no uplink)'),
    'model_path': (EnvironmentVariable('SEG_EDGE_MODEL_PATH', default_value=''),
                   'Ianvs/RFNet .pth checkpoint or exported .onnx; required to serve. '
                   'Empty: $SEG_EDGE_MODEL_PATH, else the params file'),
    'backend': ('', 'onnxruntime | tensorrt | torch; empty: the params file (onnxruntime in edge_params.yaml)'),
    'precision': ('', 'auto | fp32 | fp16 | int8 (see edge_params.yaml); empty: the params file'),
    'rgb_topic': ('', 'sensor_msgs/Image (or CompressedImage) topic; empty: the params file'),
    'depth_topic': ('', 'Depth image topic aligned to the RGB camera; empty: the params file'),
    'use_depth': ('', 'true: RGB-D model, false: RGB-only camera; empty: the params file'),
    'cache_dir': (EnvironmentVariable('SEG_EDGE_CACHE_DIR', default_value=''),
                  'Where ONNX exports, INT8 models and TensorRT engines are cached. '
                  'Empty: $SEG_EDGE_CACHE_DIR, else the params file'),
    'namespace': ('', 'ROS namespace of the node (and of its relative topic names)'),
    'rmw': ('fastdds', 'fastdds (rmw_fastrtps_cpp) | cyclonedds (rmw_cyclonedds_cpp, needs its apt package)'),
    'fastdds_profile': (os.path.join(HERE, 'fastdds_profile.xml'),
                        'rmw fastdds: XML profile for the node; empty: the middleware defaults'),
    'cyclonedds_config': (os.path.join(HERE, 'cyclonedds.xml'),
                          'rmw cyclonedds: configuration for the node; empty: the middleware defaults'),
    'respawn': ('false', 'Restart the node 2 s after it exits (also after a startup error)'),
}


def _launch_node(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context).strip() for name in ARGUMENTS}
    params_files = [existing_file('params_file', values['params_file'])]
    if values['overlay_params_file']:
        params_files.append(existing_file('overlay_params_file', values['overlay_params_file']))
    given = parameter_overrides(values)
    # Strings typed explicitly: launch_ros would otherwise read them as YAML, so a value
    # such as "123" or "true" would reach the node as a number or a bool.
    overrides = {name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
                 for name, value in given.items()}
    env = dds_environment(values['rmw'], values['fastdds_profile'], values['cyclonedds_config'])
    return [
        LogInfo(msg=f'seg_edge_node: parameters from {" over ".join(reversed(params_files))}, overridden by '
                    f'{given}; DDS: {env}'),
        Node(
            package='seg_edge_node',
            executable='seg_edge_node',
            name='seg_edge_node',
            namespace=values['namespace'] or None,
            # Later entries win: the overlay overrides the file, the launch arguments both.
            parameters=params_files + [overrides] if overrides else params_files,
            output='screen',
            emulate_tty=True,
            respawn=bool_arg('respawn', values['respawn'] or 'false'),
            respawn_delay=2.0,
            additional_env=env,
        ),
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()] + [OpaqueFunction(function=_launch_node)])
