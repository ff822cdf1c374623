"""Publishing a checkpoint on the Hugging Face Hub (``synerdetect push``): the card, the repo, the upload.

Only the checkpoint's own files go up (:data:`synerdetect.hub.CHECKPOINT_PATTERNS`, the same patterns a download
fetches: no optimiser state, no results or figures), filtered by ``huggingface_hub``'s own pattern matcher so that
the dry-run lists exactly what :meth:`HfApi.upload_folder` would send. ``HF_TOKEN`` (or ``hf auth login``) supplies
the credentials and ``HF_ENDPOINT`` a mirror, as for every hub client call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .card import CARD_NAME, CONFIG_NAME, write_card
from .hub import CHECKPOINT_PATTERNS, HubCheckpointError, parse_repo_id

__all__ = ["PushResult", "push_checkpoint", "upload_plan"]


@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    files: list[tuple[str, int | None]]  # (path in the repo, bytes; None: the card a real push writes first)
    card_written: bool
    url: str | None = None  # the commit, when uploaded
    left_out: list[str] = field(default_factory=list)  # files of the folder that are not the checkpoint's own


def upload_plan(folder: str | Path) -> list[tuple[str, int]]:
    """``(path, size)`` of every file of ``folder`` that a push uploads, sorted."""
    from huggingface_hub.utils import filter_repo_objects

    root = Path(folder)
    rel = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
    chosen = filter_repo_objects(rel, allow_patterns=list(CHECKPOINT_PATTERNS))
    return [(r, (root / r).stat().st_size) for r in chosen]


def left_out(folder: str | Path) -> list[str]:
    """The folder's files that a push does not upload (optimiser and trainer state, results, figures...)."""
    root = Path(folder)
    chosen = {p for p, _ in upload_plan(root)}
    return [r for p in sorted(root.rglob("*")) if p.is_file() and (r := p.relative_to(root).as_posix()) not in chosen]


def push_checkpoint(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    results: tuple[str, ...] = (),
) -> PushResult:
    """Write the card when the folder has none, create the repo (and branch ``revision``) if needed, upload the
    checkpoint's files in one commit. ``dry_run``: nothing is written or sent; the plan is returned."""
    root = Path(folder)
    if not (root / CONFIG_NAME).is_file():
        raise ValueError(f"{root} is not a SynerDetect checkpoint (no {CONFIG_NAME})")
    parsed = parse_repo_id(repo_id)
    if parsed is None or parsed[1] is not None:
        raise ValueError(f"{repo_id!r} is not a Hub repo id org/name (give a branch with --revision)")
    card_missing = not (root / CARD_NAME).is_file()
    files: list[tuple[str, int | None]] = list(upload_plan(root))
    if dry_run:
        if card_missing:
            files = sorted([*files, (CARD_NAME + " (the model card, written first)", None)])
        return PushResult(repo_id, revision, files, card_written=False, left_out=left_out(root))
    if card_missing:
        write_card(root, results, repo_id=repo_id)
        files = list(upload_plan(root))
    url = _upload(root, repo_id, private=private, revision=revision)
    return PushResult(repo_id, revision, files, card_written=card_missing, url=url, left_out=left_out(root))


def _upload(root: Path, repo_id: str, *, private: bool, revision: str | None) -> str:
    from huggingface_hub import HfApi

    from .version import __version__

    api = HfApi(library_name="synerdetect", library_version=__version__)
    try:
        # private=None: the namespace's default visibility (public unless the organisation says otherwise)
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=root,
            revision=revision,
            allow_patterns=list(CHECKPOINT_PATTERNS),
            commit_message=f"Upload SynerDetect checkpoint {root.name} (synerdetect {__version__})",
        )
    except Exception as e:  # noqa: BLE001 - HfHubHTTPError, its HTTP library's errors (httpx / httpx2 by version), OSError
        text = str(e).strip()
        raise HubCheckpointError(
            f"push to {repo_id} failed: {type(e).__name__}: {text.splitlines()[0] if text else ''}"
        ) from None
    return str(getattr(info, "commit_url", info))
