"""Offline part of streamrec: data set loaders, batch training and evaluation.

May import ``core``, ``online_models`` and ``index``; never ``infra``, ``api`` or
``consumers``.
"""
