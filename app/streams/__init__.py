"""The three ways out of the log: WebSocket, Server-Sent Events, long-poll."""
