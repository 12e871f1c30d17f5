"""Thin routers, one per resource: validate, call one ``service.compute`` function, wrap the result."""
