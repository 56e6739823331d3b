"""Text data helpers: tokenizers, the King James Bible loader, the Zipf-Markov language.

`sources/text.py` builds the text sources from these; nothing here imports
torch, and the `tokenizers` library is imported only when byte-pair tokens
are asked for.
"""
