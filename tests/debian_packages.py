"""Installing a Debian package for a system test (CI runs as root on a fresh machine)."""

import os
import shutil
import subprocess


def install_debian_package(package: str) -> str | None:
    """Why ``package`` cannot be installed here, or None once it is."""
    if os.geteuid() != 0:
        return f"{package} is not installed and installing it needs root (apt-get install {package})"
    if shutil.which("apt-get") is None:
        return f"{package} is not installed and apt-get is not available to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"],
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "--no-install-recommends", package],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr[-1500:]}"
    return None
