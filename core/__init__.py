"""Domain core of streamrec: events, types, settings, errors and ports.

Nothing here does I/O, and nothing here imports another part of the project.
"""
