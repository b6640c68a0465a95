"""The ASGI edge: everything that knows about HTTP.

- `edge.py`: the application class and the middleware stack every request passes (written once);
- `hot_path.py`: the lean ASGI handler that serves touch and create without FastAPI's routing;
- `core.py`: the handler core that both the hot path and the FastAPI routes call;
- `headers.py`, `bodies.py`: reading a request the same way on both paths;
- `deps.py`: FastAPI dependencies; `routes/`: the documented routes by resource;
- `errors.py`: every exception turned into its response; `openapi.py`: the contract's helpers;
- `middleware/`: access log, HTTP metrics, body limit, raw session paths.
"""
