"""The benchmark: the real stack and two floors, driven by the same websocket clients.

``python -m bench.run [--quick]`` (``make bench`` / ``make bench-quick``); see docs/performance.md.
"""
