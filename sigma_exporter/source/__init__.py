"""One Sigma server: the transport, the client, units, parsing, and the typed snapshot."""
