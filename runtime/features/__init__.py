"""Features looked up by entity id: the request side (entities), the FeatureSource protocol (source)
with PostgreSQL as one implementation (postgres), the cache, breaker and metrics that wrap any
source (wrappers, ttl_cache), and their composition for one model (store)."""
