"""Search over stored images: concept logic and text search (``t2c search``)."""
