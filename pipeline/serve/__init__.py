"""The server: checks collectors' sample sets and routes them into the per-output replay buffers, under the replay limit."""
