"""Stand-in for `google.colab.drive`: mounting makes <mountpoint>/MyDrive."""

import os


def mount(mountpoint: str, force_remount: bool = False) -> None:
    os.makedirs(os.path.join(mountpoint, "MyDrive"), exist_ok=True)
    print(f"Mounted at {mountpoint}")
