"""Several "hosts" on one machine for multi-host tests: a network namespace per host,
joined to this (the "server") namespace by a veth pair on a private /24 of its own.

    with NetnsHosts(2) as hosts:
        hosts.server_address(0)           # 10.X.0.1: where host 0 reaches the servers
        hosts.prefix(0)                   # ("ip", "netns", "exec", NAME): run a command on host 0

A server listening only on the server-side veth addresses is reachable from the hosts
(and from this namespace) and from nowhere else; the hosts reach nothing but it. Needs
root (CAP_NET_ADMIN). Names and the subnet are drawn at random and checked against the
machine's addresses, so runs of several people on one machine do not collide; destroy()
(also on a failed create) removes every namespace and link made.
"""
from __future__ import annotations

import os
import random
import secrets
import subprocess


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20).stdout


def netns_available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    try:
        _ip("netns", "list")
    except (OSError, subprocess.CalledProcessError) as e:
        return False, f"ip netns does not work here: {e}"
    return True, ""


class NetnsHosts:
    def __init__(self, count: int = 2):
        tag = secrets.token_hex(3)
        self.namespaces = [f"seg-{tag}-h{i}" for i in range(count)]
        self._links = [f"sg{tag}h{i}" for i in range(count)]    # server side (<= 15 characters)
        self._peers = [f"sg{tag}n{i}" for i in range(count)]    # moved into the namespace
        used = _ip("-o", "-4", "addr")
        while True:
            octet = random.randint(100, 250)
            if all(f" 10.{octet}.{i}." not in used for i in range(count)):
                break
        self._octet = octet
        self.created: list[str] = []

    def server_address(self, i: int) -> str:
        return f"10.{self._octet}.{i}.1"

    def host_address(self, i: int) -> str:
        return f"10.{self._octet}.{i}.2"

    def subnet(self, i: int) -> str:
        return f"10.{self._octet}.{i}.0/24"

    def prefix(self, i: int) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespaces[i])

    def create(self) -> "NetnsHosts":
        try:
            for i, ns in enumerate(self.namespaces):
                _ip("netns", "add", ns)
                self.created.append(ns)
                _ip("link", "add", self._links[i], "type", "veth", "peer", "name", self._peers[i])
                _ip("link", "set", self._peers[i], "netns", ns)
                _ip("addr", "add", f"{self.server_address(i)}/24", "dev", self._links[i])
                _ip("link", "set", self._links[i], "up")
                _ip("-n", ns, "addr", "add", f"{self.host_address(i)}/24", "dev", self._peers[i])
                _ip("-n", ns, "link", "set", self._peers[i], "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        for link in self._links:   # deleting one end of a veth pair deletes both
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=20)
        for ns in self.created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.created.clear()

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.destroy()
