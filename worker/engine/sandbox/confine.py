"""Confining the process that runs untrusted model code, with the kernel's own mechanisms.

A model file is code (TorchScript and exported programs are programs; a TorchScript archive
even runs ``__setstate__`` methods while it loads), so the host process that loads and runs it is
confined *before* the file is opened by torch:

* **resource limits** (``setrlimit``): CPU time, address space, no core files;
* **Landlock** (the ``landlock`` package): every filesystem access right the kernel knows is
  handled, and the only ones granted are read and execute beneath the Python installation,
  the engine's own package and the system libraries, plus the device files it is given
  (``/dev/null``; the NVIDIA device files for a GPU). It can create, write, truncate or delete
  nothing, and read nothing else: not the data folder, not another organisation's scans;
* **seccomp** (``pyseccomp`` over libseccomp): no sockets (so no network), no new processes or
  programs (``fork``, ``execve``; threads are allowed), no signals to other processes, no
  ``ptrace``, ``io_uring``, ``bpf``, mounts, namespaces or kernel modules.

The model gets its inputs (the file's bytes, tensors) over pipes that were open before the
confinement, so it never needs a path. :func:`confine` refuses to return unconfined: on a kernel
without Landlock it raises :class:`SandboxUnavailable`.
"""

from __future__ import annotations

import errno
import glob
import os
import resource
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

SYSTEM_LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/share/zoneinfo")
READ_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/random", "/proc/cpuinfo",
              "/sys/devices/system/cpu")
WRITE_DEVICES = ("/dev/null",)
CUDA_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset",
                "/dev/nvidia[0-9]*", "/dev/nvidia-caps")
CUDA_READ = ("/proc/driver/nvidia", "/sys/devices", "/sys/bus/pci", "/sys/module/nvidia")

# denied outright (EPERM): network, new programs and processes, other processes, kernel surfaces
DENIED_SYSCALLS = (
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "execve", "execveat", "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "tkill",
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "fsopen", "fsmount", "move_mount",
    "open_tree", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "swapon", "swapoff", "acct",
    "settimeofday", "clock_settime", "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm",
    "quotactl", "lookup_dcookie", "vhangup", "personality", "seccomp",
)
CLONE_THREAD = 0x00010000


class SandboxUnavailable(RuntimeError):
    """This kernel (or platform) cannot confine a process: untrusted models must not run here."""


@dataclass(frozen=True)
class Confinement:
    """How a model host is confined.

    Attributes:
        cpu_s: CPU-time limit in seconds (None: no limit; the supervisor's wall clock still applies).
        memory_bytes: address-space limit (data-segment limit on a GPU host).
        cuda: allow the NVIDIA device files (a GPU host).
        private: folders that must stay out of reach (the data folder): confinement is refused
            if one lies inside a folder the host must read.
    """

    cpu_s: int | None = None
    memory_bytes: int = 6 << 30
    cuda: bool = False
    private: tuple[str, ...] = ()


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: no Landlock)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        from landlock.plumbing import landlock_abi_version

        return int(landlock_abi_version())
    except Exception:  # noqa: BLE001 - any failure means no Landlock
        return 0


def readable_paths() -> list[str]:
    """What the confined host may read (and execute): Python, its packages, the engine, system libraries."""
    import worker

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(worker.__file__).resolve().parent)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(sysconfig.get_paths()[key])
    paths.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    paths.update(SYSTEM_LIBRARY_DIRS)
    paths.update(READ_FILES)
    return sorted(p for p in paths if p and os.path.exists(p))


def _limit(confinement: Confinement) -> None:
    if confinement.cpu_s is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (confinement.cpu_s, confinement.cpu_s + 5))
    # CUDA reserves far more address space than it uses: a GPU host limits its data segment instead
    kind = resource.RLIMIT_DATA if confinement.cuda else resource.RLIMIT_AS
    resource.setrlimit(kind, (confinement.memory_bytes, confinement.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _landlock(confinement: Confinement) -> None:
    from landlock import FSAccess, Ruleset

    readable = readable_paths()
    for secret in confinement.private:
        secret_path = Path(secret).resolve()
        for path in readable:
            if secret_path == Path(path).resolve() or Path(path).resolve() in secret_path.parents:
                raise SandboxUnavailable(f"the private folder {secret} lies inside {path}, which the model host "
                                         "must read: move the data folder out of the Python installation")
    handled = FSAccess.all()  # every right this kernel's Landlock knows
    ruleset = Ruleset(restrict_rules=handled)

    def allow(path: str, rules: FSAccess) -> None:
        if not os.path.isdir(path):  # directory rights cannot be granted on a file
            rules &= FSAccess.all_file()
        ruleset.allow(path, rules=rules & handled)

    for path in readable:
        allow(path, FSAccess.READ_FILE | FSAccess.EXECUTE | FSAccess.READ_DIR)
    for path in WRITE_DEVICES:
        if os.path.exists(path):
            allow(path, FSAccess.READ_FILE | FSAccess.WRITE_FILE)
    if confinement.cuda:
        for pattern in CUDA_DEVICES:
            for path in glob.glob(pattern):
                allow(path, FSAccess.READ_FILE | FSAccess.WRITE_FILE | FSAccess.IOCTL_DEV | FSAccess.READ_DIR)
        for path in CUDA_READ:
            if os.path.exists(path):
                allow(path, FSAccess.READ_FILE | FSAccess.READ_DIR)
    ruleset.apply()


def _seccomp() -> None:
    import pyseccomp as seccomp

    deny = seccomp.ERRNO(errno.EPERM)
    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(deny, name)
        except (OSError, RuntimeError, ValueError):  # not a system call of this architecture
            continue
    # processes: only threads (CLONE_THREAD); clone3 hides its flags, so glibc falls back to clone
    flt.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # signals: to itself only (abort(), raise() and Python's own signal handling still work)
    me = os.getpid()
    flt.add_rule(deny, "kill", seccomp.Arg(0, seccomp.NE, me))
    flt.add_rule(deny, "tgkill", seccomp.Arg(0, seccomp.NE, me))
    flt.add_rule(deny, "rt_sigqueueinfo", seccomp.Arg(0, seccomp.NE, me))
    flt.add_rule(deny, "rt_tgsigqueueinfo", seccomp.Arg(0, seccomp.NE, me))
    flt.load()


def confine(confinement: Confinement) -> None:
    """Confine this process for good (limits, Landlock, seccomp); nothing can lift it afterwards.

    Call it after importing everything the model host needs and before touching the model.

    Raises:
        SandboxUnavailable: the kernel has no Landlock, or libseccomp is missing; nothing
            untrusted may run in this process then.
    """
    if landlock_abi() < 1:
        raise SandboxUnavailable("this kernel has no Landlock (Linux 5.13 or newer with the landlock LSM "
                                 "enabled), so untrusted models cannot be confined here")
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, OSError) as exc:
        raise SandboxUnavailable(f"libseccomp is not available ({exc}): install libseccomp2") from None
    _landlock(confinement)
    _limit(confinement)
    _seccomp()
