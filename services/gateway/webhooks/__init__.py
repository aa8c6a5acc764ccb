"""End-of-session (and alert) webhooks: registration routes, a durable store, signed delivery with retries."""
