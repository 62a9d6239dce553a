"""The ``streamrec`` command."""
