"""`s2s serve`: translation over HTTP with dynamic batching (`pip install -e ".[serve]"`).

A front end over `s2s_jax.inference` and `s2s_jax.run` alone: `requests` checks a request,
`batcher` decodes the sentences of concurrent requests together, `app` is the HTTP layer
(Starlette), `server` warms the model up and runs it (uvicorn) until a signal stops it.
"""
