"""Evaluation at many resolutions and strategies (:mod:`.loop`), and the results.json schema (:mod:`.results`)."""
