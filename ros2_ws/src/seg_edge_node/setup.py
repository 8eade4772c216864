
from setuptools import find_packages, setup

package_name = "seg_edge_node"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="seg_edge maintainers",
    description="RFNet RGB-D semantic segmentation node for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "seg_edge_node = seg_edge_node.node:main",
        ],
    },
)
