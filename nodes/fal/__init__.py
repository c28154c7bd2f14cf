"""The fal.ai backend: httpx client (queue, storage, transfer), the backend itself and its request journal."""
