"""Finding photos by words: what a query term means in terms of the model's classes."""
