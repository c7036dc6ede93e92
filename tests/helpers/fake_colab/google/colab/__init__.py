"""A stand-in for Colab's `google.colab` package, for tests only (put tests/helpers/fake_colab on
PYTHONPATH). `google` stays a namespace package so google.protobuf keeps working beside it."""
