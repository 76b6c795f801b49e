"""Run a FakeChatServer (a TEST/DEMO double) in its own process for the benchmarks.

Usage: python bench/_server.py POLICY LATENCY — prints the base URL on one line, then serves
until its standard input closes. A separate process keeps the server's work off the
measured process's event loop and GIL, as a real model server would be.
"""

from __future__ import annotations

import sys

from _policies import POLICIES

from rlm_sdk.testing import FakeChatServer

if __name__ == "__main__":
    policy, latency = sys.argv[1], float(sys.argv[2])
    with FakeChatServer(POLICIES[policy], latency=latency) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()
