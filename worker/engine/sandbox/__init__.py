"""Untrusted model code runs only here: a confined host process (Landlock, seccomp, limits),
checked operators, and a supervisor that stops it on cancel or timeout.

See :mod:`.confine` for what the host can and cannot do, :mod:`.client` for how the engine
talks to it, and :mod:`.check` for the upload check built on it.
"""

from .client import HostedModel, HostLimits, HostStopped, ModelHost
from .confine import Confinement, SandboxUnavailable, landlock_abi

__all__ = ["Confinement", "HostLimits", "HostStopped", "HostedModel", "ModelHost", "SandboxUnavailable",
           "landlock_abi"]
