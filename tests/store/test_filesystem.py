"""A state file on a network filesystem, where SQLite's WAL does not work, is refused in one line.

The mount table parser reads a table in /proc/mounts' own format (escaped
spaces, stacked and nested mounts, FUSE types); on this machine its answer
for a real folder is checked against util-linux's `findmnt`; and `hexzd
start` is run from the command line on a folder that a mount table says is
NFS.
"""

import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from hexzd.cli import main
from hexzd.store import StateFileError, filesystem
from hexzd.store.filesystem import check_local, filesystem_of, mounts

# As the kernel writes /proc/self/mounts: `device mount-point type options 0 0`, a space as \040.
TABLE = r"""/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
nas:/export/home /home nfs4 rw,relatime,vers=4.2,rsize=1048576,wsize=1048576,hard,proto=tcp 0 0
/dev/vdb /home/me/local ext4 rw,relatime 0 0
me@box:/data /mnt/my\040data fuse.sshfs rw,nosuid,nodev,relatime,user_id=1000,group_id=1000 0 0
C:\134 /mnt/c 9p rw,noatime,dirsync,aname=drvfs;path=C:\;uid=1000;gid=1000 0 0
/dev/vdc /srv ext4 rw,relatime 0 0
//server/share /srv cifs rw,relatime,vers=3.1.1 0 0
"""


def test_the_mount_table_reads_in_proc_mounts_format():
    table = mounts(TABLE)
    assert table[0] == ("/", "ext4")
    assert ("/mnt/my data", "fuse.sshfs") in table  # \040 is a space
    assert ("/mnt/c", "9p") in table
    assert len(table) == 9


@pytest.mark.parametrize(
    "folder,found",
    [
        ("/home/me/runs", ("/home", "nfs4")),
        ("/home", ("/home", "nfs4")),
        ("/home/me/local/runs", ("/home/me/local", "ext4")),  # a local disk mounted inside the share
        ("/homework", ("/", "ext4")),  # a prefix of the name is not a parent folder
        ("/mnt/my data/runs", ("/mnt/my data", "fuse.sshfs")),
        ("/mnt/c/Users/me", ("/mnt/c", "9p")),
        ("/srv/runs", ("/srv", "cifs")),  # mounted over /srv's disk: the later mount hides it
        ("/tmp/run", ("/tmp", "tmpfs")),
    ],
)
def test_a_folder_is_on_the_longest_mount_point_that_holds_it(folder, found):
    assert filesystem_of(folder, mounts(TABLE)) == found


@pytest.mark.parametrize(
    "db,said",
    [
        ("/home/me/run.sqlite", "(nfs4, mounted at /home)"),
        ("/mnt/my data/run.sqlite", "(fuse.sshfs, mounted at /mnt/my data)"),
        ("/mnt/c/Users/me/run.sqlite", "(9p, mounted at /mnt/c)"),
        ("/srv/run.sqlite", "(cifs, mounted at /srv)"),
    ],
)
def test_a_state_file_on_a_network_filesystem_is_refused_in_one_line(db, said):
    with pytest.raises(StateFileError) as refused:
        check_local(db, TABLE)
    assert str(refused.value) == (
        f"on a network filesystem {said}, where SQLite's WAL does not work: put the state file on a local disk"
    )


@pytest.mark.parametrize("db", ["/home/me/local/run.sqlite", "/tmp/run.sqlite", "/run.sqlite"])
def test_a_state_file_on_a_local_disk_passes(db):
    check_local(db, TABLE)


@pytest.mark.skipif(not filesystem.MOUNTS.exists(), reason="no /proc/self/mounts (not Linux)")
@pytest.mark.skipif(shutil.which("findmnt") is None, reason="no findmnt (util-linux) to compare with")
def test_this_machines_mount_of_a_folder_is_the_one_findmnt_names(tmp_path):
    folder = os.path.realpath(tmp_path)
    found = filesystem_of(folder, mounts(filesystem.MOUNTS.read_text()))
    answer = subprocess.run(
        ["findmnt", "-n", "-o", "TARGET,FSTYPE", "--target", folder], capture_output=True, text=True, check=True
    )
    target, kind = answer.stdout.split()
    assert found == (target, kind)
    check_local(tmp_path / "run.sqlite")  # this machine's own table: a local disk


def test_hexzd_start_refuses_a_network_folder_before_anything_is_made(tmp_path, monkeypatch):
    """The table says tmp_path is an NFS mount: `hexzd start` says so in one line, and makes nothing."""
    table = tmp_path / "mounts"
    point = os.path.realpath(tmp_path).replace(" ", "\\040")
    table.write_text(TABLE + f"nas:/runs {point} nfs rw,vers=3 0 0\n")
    monkeypatch.setattr(filesystem, "MOUNTS", table)
    db, config = tmp_path / "run.sqlite", tmp_path / "config.toml"
    result = CliRunner().invoke(main, ["start", "--headless", "--db", str(db), "--config", str(config)])
    said = f"on a network filesystem (nfs, mounted at {os.path.realpath(tmp_path)}), where SQLite's WAL"
    assert (result.exit_code, result.output.count("\n")) == (1, 1), result.output
    assert result.output.startswith(f"hexzd: {db}: {said}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mounts"]  # no state file, config or run directory
