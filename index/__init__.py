"""Item-embedding indexes: FAISS for serving, exact NumPy search as the reference.

Both implement :class:`core.ports.VectorIndex` and pass the shared contract
suite in ``tests/contracts/vector_index.py``.
"""

from index.faiss_index import ExactIndex, FaissIndex

__all__ = ["ExactIndex", "FaissIndex"]
