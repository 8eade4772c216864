import os
from glob import glob

from setuptools import find_packages, setup

package_name = "seg_edge_node"
# The launch file, its parameter files and DDS configurations live in the repository's
# launch/ folder (the project's layout); they are installed into share/seg_edge_node/launch
# so that `ros2 launch seg_edge_node edge.launch.py` works on an install.
LAUNCH_DIR = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "launch"))
LAUNCH_FILES = sorted(glob(os.path.join(LAUNCH_DIR, "*.launch.py")) + glob(os.path.join(LAUNCH_DIR, "*.yaml"))
                      + glob(os.path.join(LAUNCH_DIR, "*.xml")))

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", LAUNCH_FILES),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="seg_edge maintainers",
    description="RFNet RGB-D semantic segmentation node for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "seg_edge_node = seg_edge_node.node:main",
            # `ros2 run seg_edge_node bag_replay run.mcap` and friends.
            "bag_from_dataset = seg_edge_node.bag_from_dataset:main",
            "bag_replay = seg_edge_node.bag_replay:main",
            "bag_record = seg_edge_node.bag_record:main",
        ],
    },
)
