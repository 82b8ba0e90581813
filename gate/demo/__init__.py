"""The built-in demo: a corpus with planted secrets and a small model that memorized them.

`corpus.py` writes the corpus (code, planted secrets, held-out controls), `train.py`
trains the model on it, and `build.py` ties both into a cached, versioned build that
`codeeraser demo` and the tests use.
"""
