"""stockgate.v1: the gRPC contract, generated from the .proto files beside this one.

Regenerate with `python proto/generate.py` after editing a .proto; a test fails while the
generated modules are stale.
"""
