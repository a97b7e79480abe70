# The zipapp's __main__.py (krew/build.py copies it in): krew installs the zipapp as kubectl-migrate,
# and its shebang runs it with the python3 on PATH.
#
# Python never caches bytecode for modules imported from a zip, and kubernetes_asyncio's client
# imports ~700 modules: compiled on every run, that is ~1.3 s more per command. So the first run
# unpacks the zip into ${XDG_CACHE_HOME:-~/.cache}/kubectl-migrate/<sha256 of this file>/ (to a
# temporary directory, renamed into place: concurrent first runs are fine) and every run imports from
# there, where Python keeps its __pycache__. Where that cannot be written, it runs from the zip.
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile

if sys.version_info < (3, 11):  # noqa: UP036  (ruff assumes 3.11: the user's python3 may be older)
    sys.stderr.write(f"kubectl-migrate needs Python 3.11 or newer; python3 here is {sys.version.split()[0]}\n")
    sys.exit(1)


def _unpacked(archive: str) -> str | None:
    """The directory holding this zipapp's files, unpacked once per build; None if it cannot be made."""
    try:
        with open(archive, "rb") as f:
            key = hashlib.sha256(f.read()).hexdigest()[:32]
        cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kubectl-migrate")
        target = os.path.join(cache, key)
        if os.path.isfile(os.path.join(target, "__main__.py")):
            return target
        os.makedirs(cache, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{key}.", dir=cache)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
            os.chmod(tmp, 0o755)
            os.rename(tmp, target)  # fails if another run got there first: theirs is as good
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return target if os.path.isfile(os.path.join(target, "__main__.py")) else None
    except (OSError, zipfile.BadZipFile):
        return None


_here = os.path.dirname(os.path.abspath(__file__))  # the zipapp itself: __file__ is <zipapp>/__main__.py
if zipfile.is_zipfile(_here):
    _dir = _unpacked(_here)
    if _dir is not None:
        sys.path.insert(0, _dir)  # ahead of the zip, which stays on sys.path behind it


def _main() -> int:
    from migrator.cli.main import main  # imported only now: from the unpacked copy if there is one

    return main()


sys.exit(_main())
