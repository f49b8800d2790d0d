"""What both FastAPI apps share: lifespan wiring, error handlers, health routes."""
