"""FastStream consumers: thin handlers that validate, learn and update state."""
