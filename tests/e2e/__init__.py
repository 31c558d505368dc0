"""End-to-end harness: real daphne servers, a real Celery worker and beat, a websockets client.

    from tests.e2e import Stack, WsClient

    stack = Stack.start(servers=2, env={"OFFER_TIMEOUT_S": "2"}, database_name="test_x")
    try:
        token = stack.login(0, "customer1", "pw")
        async with await WsClient.connect(stack.ws_url(1, "/ws/agent/"), token=token) as ws:
            ...
    finally:
        stack.stop()

See tests/e2e/stack.py and tests/e2e/client.py.
"""

from tests.e2e.client import Transcript, WsClient, WsClosed
from tests.e2e.stack import Stack, StackError, free_port

__all__ = ["Stack", "StackError", "Transcript", "WsClient", "WsClosed", "free_port"]
