"""The HTTP side on its own thread: exporter cache, routes, server, web config, auth."""
