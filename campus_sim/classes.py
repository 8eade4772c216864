"""The 30 cloud-robotics class ids (KubeEdge-Ianvs) as named constants.

The order must match models/rfnet/data/cloud_robotics_classes.yaml, which the model
and the node read; a unit test checks the names against that file.
"""
from __future__ import annotations

from enum import IntEnum


class Cls(IntEnum):
    ROAD = 0
    SIDEWALK = 1
    BUILDING = 2
    WALL = 3
    FENCE = 4
    POLE = 5
    TRAFFIC_LIGHT = 6
    TRAFFIC_SIGN = 7
    VEGETATION = 8
    TERRAIN = 9
    SKY = 10
    PERSON = 11
    RIDER = 12
    CAR = 13
    TRUCK = 14
    BUS = 15
    TRAIN = 16
    MOTORCYCLE = 17
    BICYCLE = 18
    STAIR = 19
    CURB = 20
    RAMP = 21
    RUNWAY = 22
    FLOWERBED = 23
    DOOR = 24
    CCTV_CAMERA = 25
    MANHOLE = 26
    HYDRANT = 27
    BELT = 28
    DUSTBIN = 29


NUM_CLASSES = len(Cls)
IGNORE = 255
