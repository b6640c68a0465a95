"""Pure-ASGI middlewares (not BaseHTTPMiddleware: they sit on the touch path). `app/http/edge.py` stacks
them once for every route, the hot paths included."""
