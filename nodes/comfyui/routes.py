"""HTTP routes of the pack: fal key (stored server-side, never echoed in full), settings, constants."""
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

        return web.json_response(Settings.load().__dict__)

    @routes.post("/ltx_outpaint/settings")
    async def settings_post(request):
        """Update non-secret settings (base-URL overrides, default backend); unknown names are refused."""
        import dataclasses

        from ..settings import Settings
        from ..web_constants import BACKENDS

        body = await request.json()
        current = Settings.load()
        fields = {f.name: f for f in dataclasses.fields(Settings)}
        if not isinstance(body, dict) or set(body) - set(fields):
            return web.json_response({"error": f"allowed settings: {', '.join(fields)}"}, status=400)
        if body.get("default_backend", current.default_backend) not in BACKENDS:
            return web.json_response({"error": f"default_backend: allowed {', '.join(BACKENDS)}"}, status=400)
        for name, value in body.items():
            if name.endswith("_url") and value and not str(value).startswith(("http://", "https://")):
                return web.json_response({"error": f"{name}: must be an http(s) URL or empty"}, status=400)
        updated = dataclasses.replace(current, **{k: type(getattr(current, k))(v) for k, v in body.items()})
        updated.save()
        return web.json_response(updated.__dict__)

    @routes.post("/ltx_outpaint/fal_key")
    async def fal_key_store(request):
        body = await request.json()
        value = str(body.get("key", "")) if isinstance(body, dict) else ""
        store_fal_key(value)
        key = find_fal_key()
        return web.json_response({"configured": key is not None, "masked": key.masked() if key else None})
