"""The test harness's polls: a refused connection, from the prunehive API or from the Ray state API,
means "not yet" and never ends a wait early (a loaded machine refuses connections for a while)."""

from __future__ import annotations

import http.server
import threading

import pytest
from topology import free_port, http_ok, wait_for


def test_refused_connections_count_as_not_yet() -> None:
    port, calls = free_port(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)

    def check() -> bool:
        calls.append(1)
        if len(calls) == 3:  # refused twice, then the server comes up
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return http_ok(f"http://127.0.0.1:{port}/")

    try:
        wait_for(check, "the server", timeout=30, every=0.05)
    finally:
        server.shutdown()
    assert len(calls) >= 3


def test_a_refusing_ray_dashboard_is_not_ready_yet_not_an_error() -> None:
    from ray.util.state import list_nodes

    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TimeoutError, match="not ready after 1 s; last error: .*Unavailable"):
        wait_for(lambda: bool(list_nodes(address=address)), "the Ray dashboard", timeout=1.0, every=0.1)
