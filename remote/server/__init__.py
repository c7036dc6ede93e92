"""The remote end: runs on Colab, Kaggle or any Linux machine. Never imports remote.client."""
