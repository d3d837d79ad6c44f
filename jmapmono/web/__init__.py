"""The HTTP front end: Flask app factory, authentication and routes."""
