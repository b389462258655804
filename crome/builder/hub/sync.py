"""Where a release goes: a local folder laid out as on the Hub, or a Hub dataset repo; only crome's files change.

A local folder is one `crome publish` owns (crome.outputs): new, empty, marked by an earlier
publish, or one an older crome published (its card carries crome's tag). Its files are replaced as
one export (staged, then renamed under a recorded plan). In either target:

- README.md is replaced only when it is a card crome rendered and nobody edited since (its last
  line signs the text above it); any other README is kept, unless `overwrite_card`;
- shards are replaced or deleted only when crome wrote them: in a folder, those its marker lists; on
  the Hub, where every earlier version stays in the history, the shards of the splits crome writes
  (`data/train-*`, `data/test-*`). Other splits, and any other file, are kept.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crome import __version__
from crome.builder.hub.card import is_crome_card, is_older_crome_card
from crome.outputs import Export, Layout, OutputError, claim, file_digest, folder_lock

CARD = "README.md"
# The shards crome writes: its splits, in the names `datasets.push_to_hub` uses.
SHARD_RE = re.compile(r"^data/(?P<split>train|test)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


class PublishError(Exception):
    """A run that cannot be published, or a target that cannot be written; the message says which and why."""


def _older_published(folder: Path) -> bool:
    """A folder an older crome published (no marker): its README is a card with crome's tag."""
    try:
        return is_older_crome_card((folder / CARD).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return False


DATASET_LAYOUT = Layout(
    kind="dataset", what="`crome publish`", lock=".crome.lock", own=(".crome.lock", "data"),
    exports=r"README\.md|data/(train|test)-\d{5}-of-\d{5}\.parquet", legacy=_older_published,
)


@dataclass(frozen=True)
class StagedFile:
    path: str  # path in the repo, posix
    sha256: str
    git_sha1: str  # git blob id: how the Hub names a file that is not stored in LFS
    size: int


@dataclass
class Release:
    """The files of one publication, staged under `root` in the Hub's layout."""

    root: Path
    files: dict[str, StagedFile]
    splits: dict[str, int]  # rows per split
    license: str
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.splits.values())

    def commit_message(self) -> str:
        parts = ", ".join(f"{name} {n}" for name, n in self.splits.items())
        return f"crome {__version__}: publish {self.rows} rows ({parts})"


@dataclass
class SyncResult:
    target: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # files crome did not write, left as they were
    commit_url: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)


# ---------------------------------------------------------------- targets


def is_local_target(to: str) -> bool:
    """A path that exists, or starts with `.`, `/`, `~` (or `file://`), is a folder; anything else names a Hub repo."""
    if to.startswith("hf://"):
        return False
    if to.startswith((".", "/", "~", "file://")) or "\\" in to:
        return True
    return Path(to).exists()


def local_folder(to: str) -> Path:
    return Path(to.removeprefix("file://")).expanduser()


def hub_repo_id(to: str) -> str:
    repo_id = to.removeprefix("hf://").removeprefix("datasets/").strip("/")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    hint = "a local folder starts with ./, / or ~, and a Hub dataset id is ORG/NAME"
    if repo_id.count("/") != 1:
        raise PublishError(f"--to {to!r} is neither an existing folder nor a Hub dataset id ORG/NAME: {hint}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"--to {to!r} is not a Hub dataset id ORG/NAME ({str(e).splitlines()[0]}): {hint}") from None
    return repo_id


# ---------------------------------------------------------------- a local folder


def sync_to_folder(release: Release, folder: Path, *, overwrite_card: bool = False) -> SyncResult:
    """Make `folder` hold the release: crome's files replaced as one export, every other file kept."""
    folder = Path(folder)
    try:
        claim(folder, DATASET_LAYOUT, "crome publish", option="--to")
        with folder_lock(folder, DATASET_LAYOUT.lock, what="folder"):
            owned = claim(folder, DATASET_LAYOUT, "crome publish", option="--to")  # read again under the lock
            export = Export(owned, "crome publish")
            result = SyncResult(target=str(folder))
            for path, staged in release.files.items():
                dest = folder / path
                if path == CARD and dest.is_file() and not is_crome_card(dest.read_text(encoding="utf-8", errors="replace")):
                    if not overwrite_card:
                        owned.disown(CARD)  # the user's now: never replaced, never deleted
                        result.kept.append(CARD)
                        continue
                    owned.adopt(CARD)  # --overwrite-card: the user gave this one file to crome
                if dest.is_file() and owned.owns(path) and file_digest(dest)["sha256"] == staged.sha256:
                    export.keep(path)
                    result.unchanged.append(path)
                    continue
                (result.updated if dest.is_file() else result.added).append(path)
                export.copy(path, release.root / path)
            result.deleted = export.stale()
            export.commit()
    except OutputError as e:
        raise PublishError(str(e)) from None
    return result


# ---------------------------------------------------------------- a Hub repo


def _remote_matches(remote: Any, staged: StagedFile) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return lfs.sha256 == staged.sha256
    return remote.blob_id == staged.git_sha1


def _remote_card_is_crome(api: Any, repo_id: str, revision: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="crome-card-") as tmp:
        path = api.hf_hub_download(repo_id, CARD, repo_type="dataset", revision=revision, local_dir=tmp)
        return is_crome_card(Path(path).read_text(encoding="utf-8", errors="replace"))


def sync_to_hub(
    release: Release, repo_id: str, *, private: bool = True, revision: str | None = None, overwrite_card: bool = False,
    api: Any = None,
) -> SyncResult:
    """One commit with the changed files and crome's stale shards deleted; no commit when nothing changed.

    The token comes from HF_TOKEN or the user's saved login, resolved by huggingface_hub; it is never printed.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.hf_api import RepoFile

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    # Compare against one fixed commit and commit on top of it, so a concurrent push fails instead of mixing.
    parent = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    remote = {
        f.path: f
        for f in api.list_repo_tree(repo_id, repo_type="dataset", revision=parent or revision, recursive=True)
        if isinstance(f, RepoFile)
    }
    result = SyncResult(target=f"hf://datasets/{repo_id}" + (f"@{revision}" if revision else ""))
    operations: list[Any] = []
    for path, staged in release.files.items():
        if path in remote and _remote_matches(remote[path], staged):
            result.unchanged.append(path)
            continue
        if path == CARD and path in remote and not overwrite_card and not _remote_card_is_crome(api, repo_id, parent or revision):
            result.kept.append(CARD)
            continue
        (result.updated if path in remote else result.added).append(path)
        operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(release.root / path)))
    for path in sorted(remote):
        if SHARD_RE.match(path) and path not in release.files:
            result.deleted.append(path)
            operations.append(CommitOperationDelete(path_in_repo=path))
    if operations:
        info = api.create_commit(
            repo_id, operations=operations, commit_message=release.commit_message(),
            repo_type="dataset", revision=revision, parent_commit=parent,
        )
        result.commit_url = getattr(info, "commit_url", None)
    return result
