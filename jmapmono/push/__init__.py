"""Push front ends: WebSocket, EventSource and web push. They only listen."""
