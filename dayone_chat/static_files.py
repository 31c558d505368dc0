"""WhiteNoise for the ASGI server without thread hops on every request.

WhiteNoise's middleware is sync-only. In a chain of async-capable middleware (Django's own, ours)
under ASGI, Django runs it in a thread and calls the rest of the chain back on the event loop
(``AsyncToSync``), so every API request hopped thread → loop → thread and held its pooled
database connection through each hop while the loop was busy (seen in the benchmark: 40 request
threads waiting in ``WhiteNoiseMiddleware.__call__`` for the loop, 20 more waiting for a
connection). This subclass is async-capable: a static file is served from a thread as before,
anything else goes straight on down the chain on the event loop.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(get_response, *args, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: Any) -> Any:
        if self.autorefresh:  # DEBUG: looks at the disk, so off the loop
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
