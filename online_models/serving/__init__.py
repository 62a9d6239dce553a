"""The live recommendation pipeline, its sources and their registry (served by the API and
measured by ``streamrec evaluate --models served``)."""
