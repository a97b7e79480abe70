"""The checkpoint archive and checkpoint OCI image: the format every component shares.

The node agent writes it, the control service reads its metadata, and the local
cluster's node restores from it. It lives in its own package so that all three can
import it without importing each other (see ``names`` for every constant of the format).
"""
