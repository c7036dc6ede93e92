"""The user's end: runs on their computer. Never imports remote.server."""
