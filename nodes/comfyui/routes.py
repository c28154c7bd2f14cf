"""HTTP routes of the pack: fal key (stored server-side, never echoed in full), settings, constants.

Nothing reachable over HTTP can widen what the server allows: the fal base URLs may only name hosts the
server's environment allows (the key follows them), and every setting is type-checked (400 with the reason).
"""
from __future__ import annotations

from ..settings import find_fal_key, store_fal_key


def register_routes() -> None:
    """Pack routes: store the fal key server-side (never echoed back in full)."""
    from aiohttp import web
    from server import PromptServer

    routes = PromptServer.instance.routes

    @routes.get("/ltx_outpaint/fal_key")
    async def fal_key_status(request):
        key = find_fal_key()
        return web.json_response({"configured": key is not None, "source": key.source if key else None,
                                  "masked": key.masked() if key else None})

    @routes.get("/ltx_outpaint/constants")
    async def web_constants(request):
        from ..web_constants import constants

        return web.json_response(constants())

    @routes.get("/ltx_outpaint/settings")
    async def settings_get(request):
        from ..settings import Settings

        return web.json_response(Settings.load().as_dict())

    @routes.post("/ltx_outpaint/settings")
    async def settings_post(request):
        """Update non-secret settings; a wrong type or value, or a base URL on a host the server's environment
        does not allow (the key would follow it), is refused with 400 and the reason."""
        from ..fal.hosts import check_settings_hosts
        from ..settings import Settings

        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        try:
            updated = Settings.load().updated(body)
            check_settings_hosts({k: getattr(updated, k) for k in body})
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        updated.save()
        return web.json_response(updated.as_dict())

    @routes.post("/ltx_outpaint/fal_key")
    async def fal_key_store(request):
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("key", ""), str):
            return web.json_response({"error": 'the body must be {"key": "<fal key>"} (an empty key deletes it)'},
                                     status=400)
        store_fal_key(body.get("key", ""))
        key = find_fal_key()
        return web.json_response({"configured": key is not None, "masked": key.masked() if key else None})
