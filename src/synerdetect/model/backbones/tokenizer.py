"""A tiny byte-level BPE vocabulary in the CLIP tokenizer's file format.

No hub is reachable here, so the ``tiny`` preset writes its own ``vocab.json`` and
``merges.txt`` and loads them with transformers' real ``CLIPTokenizer``: the code path is
the one a downloaded CLIP folder takes.
"""

from __future__ import annotations

import json
from pathlib import Path

# Merges that make the words of the default prompts single tokens, as in real CLIP.
_WORDS = ["real", "fake", "photo", "image", "a", "of"]


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte -> printable-unicode table (the published definition).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tiny_clip_tokenizer_files(folder: str | Path) -> int:
    """Write vocab.json + merges.txt for a tiny CLIP tokenizer; return the vocabulary size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for w in _WORDS:
        if len(w) == 1:
            continue
        cur = w[0]
        for i, ch in enumerate(w[1:], start=1):
            right = ch + ("</w>" if i == len(w) - 1 else "")
            merges.append((cur, right))
            cur = cur + right
            if cur not in vocab_list:
                vocab_list.append(cur)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in dict.fromkeys(merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(vocab)


def load_tokenizer(folder: str | Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))
