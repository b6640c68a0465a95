"""Reference peers: tiny standalone ASGI apps implementing the same touch/create contract as the service.

Each module is self-contained on purpose (copy one out and it still runs). Configuration comes from env:
BENCH_DATABASE_URL (postgresql://...), BENCH_REDIS_URL, BENCH_REDIS_PREFIX, BENCH_TENANT, BENCH_POOL_SIZE.
"""
