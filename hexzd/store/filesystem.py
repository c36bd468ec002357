"""Whether a state file's folder is on a network filesystem, where SQLite's WAL does not work.

WAL keeps the index of its log in a -shm file that every connection maps
into memory, and coordinates the writer and the readers with POSIX locks on
it. Over a network filesystem (NFS, SMB/CIFS, 9p, sshfs, ...) neither is
reliable: SQLite's documentation says that WAL does not work over a network
filesystem. A run there fails with "disk I/O error" or "database is locked",
or worse loses commits, hours into a run. So `hexzd start` refuses such a
folder at once, in one line (`check_local`), rather than warn and run.

The filesystem of a folder is that of the longest mount point in the mount
table (/proc/self/mounts, the format of /proc/mounts) that holds it. Linux
only: where there is no /proc (macOS) the check is not made.
"""

import os
import re
from pathlib import Path

from hexzd.store.schema import StateFileError

MOUNTS = Path("/proc/self/mounts")

# Filesystem types (the third field of /proc/mounts) of network and cluster filesystems.
# 9p is WSL2's /mnt/c (drvfs its older name); FUSE filesystems are named fuse.<program>.
NETWORK = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "drvfs",
        "fuse.sshfs",
        "sshfs",
        "afs",
        "ncpfs",
        "coda",
        "ceph",
        "fuse.ceph",
        "glusterfs",
        "fuse.glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.davfs2",
    }
)

_ESCAPE = re.compile(r"\\([0-7]{3})")  # the kernel writes a space as \040, a backslash as \134


def mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of each line of a mount table in /proc/mounts' format:
    `device mount-point type options dump pass`, the mount point's octal escapes decoded."""
    table = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            table.append((_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields[1]), fields[2]))
    return table


def filesystem_of(folder: str, table: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(mount point, type) of the mount that holds `folder` (an absolute, resolved path):
    the longest mount point that is the folder or one of its parents, the last one of
    those mounted on one point (it hides the ones below). None if none holds it."""
    found: tuple[str, str] | None = None
    for point, kind in table:
        holds = point == "/" or folder == point or folder.startswith(point.rstrip("/") + "/")
        if holds and (found is None or len(point) >= len(found[0])):
            found = (point, kind)
    return found


def check_local(path, table_text: str | None = None) -> None:
    """Raises StateFileError if the folder of the state file `path` is on a network filesystem.

    table_text: a mount table's text; by default this machine's (/proc/self/mounts).
    Without one (no /proc: macOS) nothing is checked."""
    if table_text is None:
        try:
            table_text = MOUNTS.read_text()
        except OSError:
            return
    folder = os.path.realpath(Path(path).absolute().parent)
    found = filesystem_of(folder, mounts(table_text))
    if found and found[1] in NETWORK:
        point, kind = found
        raise StateFileError(
            f"on a network filesystem ({kind}, mounted at {point}), where SQLite's WAL does not work: "
            "put the state file on a local disk"
        )
