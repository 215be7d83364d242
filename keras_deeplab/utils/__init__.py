"""Plumbing every layer of the package uses: the user-error type (`errors`),
safe names (`names`), atomic writes (`atomic`), timing, memory readings,
lazy attributes and image-size parsing. Nothing here imports Keras."""
