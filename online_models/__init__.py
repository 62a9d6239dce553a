"""Streaming models fed by the consumers: content profiles, decayed popularity, ...

Each model learns from events one at a time (or in a batch) and never learns
while it scores.
"""
