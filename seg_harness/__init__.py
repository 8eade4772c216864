"""Test, benchmark and demo harness; not part of the product.

What the tests, benchmarks, the demo and the evaluation (seg_eval) need to run the
product's programs for real on one machine: ROS 2 processes in a private DDS domain
(processes), a private mosquitto and bridge processes (local_cloud), a synthetic RGB-D
camera and a recorder of the node's outputs (synthetic_camera, result_recorder, both
ROS 2 nodes), a tiny random-weight SAM (tiny_sam) and the fusion vote timing
(vote_benchmark). Product packages never import it.
"""
