"""Checkpoints on the Hugging Face Hub: ``org/name`` or ``org/name@revision`` wherever a checkpoint folder is taken.

:func:`resolve_checkpoint` turns what a user typed into a local folder. An existing local path always wins (a folder
that happens to be called ``org/name`` is never shadowed by the Hub); otherwise a repo id is fetched with
``huggingface_hub.snapshot_download``, restricted to the checkpoint's own files (:data:`CHECKPOINT_PATTERNS`: no
optimiser state, results or figures), into the standard Hugging Face cache. The hub client itself honours
``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache lives), ``HF_HUB_OFFLINE`` (no request at all: the cached snapshot of
``refs/<revision>`` or an error), ``HF_TOKEN`` (private and gated repos) and ``HF_ENDPOINT`` (a mirror).

A missing repo, revision or file, or no network, is one :class:`HubCheckpointError` line naming the id and what was
tried. The hub client's HTTP session has no timeout of its own, so the first request (the repo's metadata) is made
here with :data:`TIMEOUT_S` and an unreachable Hub fails fast instead of waiting silently.

Torch-free (layer 0), so the command line can resolve ``--checkpoint`` before it imports the model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "CHECKPOINT_PATTERNS",
    "HubCheckpointError",
    "TIMEOUT_S",
    "hub_ref",
    "is_repo_id",
    "parse_repo_id",
    "resolve_checkpoint",
]

#: What a published checkpoint consists of (``save_pretrained``: the config and the trainable weights; ``tiny``
#: base models under ``base/``; the calibration, the model card and the fine-tuning lineage). Nothing else in the
#: repo is downloaded. ``tests/test_hub.py`` checks these names against :mod:`synerdetect.model.base`.
#: ``replay/`` (the replay memory ``adapt --replay-from-checkpoint`` mixes in) is left out on purpose, here and by
#: ``push``: it holds training images, copied byte for byte, which a public upload must not republish (their
#: licences and the people in them are not the model's to share). So a checkpoint from the Hub is adapted with
#: ``--replay OLD_DATA``.
CHECKPOINT_PATTERNS: tuple[str, ...] = (
    "synerdetect_config.json",
    "trainable.safetensors",
    "calibration.json",
    "lineage.json",
    "README.md",
    "base/*",
)
CONFIG_FILE = CHECKPOINT_PATTERNS[0]

#: Seconds to wait for the Hub's first answer (``HF_HUB_ETAG_TIMEOUT`` overrides it, as for the hub client's own
#: metadata requests).
TIMEOUT_S = 10.0

# The Hub's own rule for repo names (letters, digits, '-', '_', '.'); a revision is a branch, tag or commit.
_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


class HubCheckpointError(OSError):
    """A checkpoint named by a repo id that could not be fetched (one line: the id and what was tried)."""


def parse_repo_id(spec: str) -> tuple[str, str | None] | None:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; ``"org/name"`` -> ``("org/name", None)``; None for anything
    that is not a repo id (``runs/x/final``, ``./model``, ``/abs/path``, ``name``)."""
    m = _REPO_ID.match(spec)
    if m is None or spec.startswith(".") or ".." in m.group("repo"):
        return None
    return m.group("repo"), m.group("rev")


def is_repo_id(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` (a str or a path: ``Path("org/name")`` too) names a Hub repo rather than an existing local
    path."""
    s = os.fspath(spec)
    return isinstance(s, str) and not Path(s).expanduser().exists() and parse_repo_id(s) is not None


def hub_ref(folder: str | os.PathLike) -> str | None:
    """``"org/name@<commit>"`` when ``folder`` is a snapshot of the Hugging Face cache (``models--org--name/
    snapshots/<commit>``, where :func:`resolve_checkpoint` puts a download; the Hub forbids ``--`` inside names, so
    the folder name splits back unambiguously); None for any other folder."""
    p = Path(folder)
    repo = p.parent.parent.name
    if p.parent.name != "snapshots" or not repo.startswith("models--") or repo.count("--") != 2:
        return None
    return repo.removeprefix("models--").replace("--", "/") + "@" + p.name


def _timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or TIMEOUT_S)
    except ValueError:
        return TIMEOUT_S


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """The local folder of checkpoint ``spec``: an existing path as it is; a repo id ``org/name[@revision]``
    downloaded (or found in the cache) with ``snapshot_download``. Anything else is returned as a path, so the
    loader says what is wrong with it as it always did."""
    if not is_repo_id(spec):
        return Path(spec).expanduser()
    parsed = parse_repo_id(str(os.fspath(spec)))
    assert parsed is not None
    repo_id, revision = parsed
    folder = Path(_download(repo_id, revision))
    if not (folder / CONFIG_FILE).is_file():
        raise HubCheckpointError(
            f"{spec}: the Hub repo {repo_id} (revision {revision or 'main'}) holds no {CONFIG_FILE}: "
            "it is not a SynerDetect checkpoint"
        )
    return folder


def _download(repo_id: str, revision: str | None) -> str:
    """``snapshot_download`` of the checkpoint's files, after a metadata request with a timeout (see the module
    docstring); every failure becomes one :class:`HubCheckpointError` line."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .version import __version__

    name = f"{repo_id}@{revision}" if revision else repo_id
    rev = revision or "main"
    unreachable: str | None = None
    try:
        HfApi().repo_info(repo_id, revision=revision, timeout=_timeout())
    except GatedRepoError:
        raise HubCheckpointError(f"{name}: the Hub repo is gated; accept its terms and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubCheckpointError(
            f"{name}: no such local folder, and no Hub repo {repo_id} (or it is private: set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise HubCheckpointError(f"{name}: the Hub repo {repo_id} has no revision {rev!r}") from None
    except OfflineModeIsEnabled:
        unreachable = "HF_HUB_OFFLINE is set"
    except Exception as e:  # noqa: BLE001 - no network, a timeout, the Hub down: its HTTP library's own error types
        unreachable = f"the Hub did not answer ({type(e).__name__}: {_first_line(e)})"
    try:
        return snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(CHECKPOINT_PATTERNS),
            etag_timeout=_timeout(),
            library_name="synerdetect",
            library_version=__version__,
        )
    except LocalEntryNotFoundError:
        why = unreachable or "the download failed"
        raise HubCheckpointError(
            f"{name}: no such local folder; {why}, and the Hugging Face cache has no snapshot of {repo_id} at {rev!r}"
        ) from None
    except Exception as e:  # noqa: BLE001 - HfHubHTTPError, the HTTP library's (httpx / httpx2 by version), OSError
        raise HubCheckpointError(
            f"{name}: download from the Hub failed: {type(e).__name__}: {_first_line(e)}"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
