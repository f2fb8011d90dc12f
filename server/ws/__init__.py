"""WebSocket protocols: thin adapters from a wire protocol to the conversation core."""
