"""Pushing datasets and adapters to the Hugging Face Hub. The token comes from HF_TOKEN only."""
from __future__ import annotations

import os
from pathlib import Path


class HubError(RuntimeError):
    pass


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise HubError("pushing to the Hub needs a write token in the HF_TOKEN environment variable")
    return token


def push_folder(repo_id: str, folder: Path, card: str, repo_type: str, private: bool = True) -> str:
    """Create (or reuse) the repo, write README.md as its card, upload the folder; return the URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=hub_token())
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        (Path(folder) / "README.md").write_text(card)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                          commit_message="Upload from memorize")
    except Exception as exc:  # network, auth and permission errors all end the push the same way
        raise HubError(f"push to {repo_type} repo {repo_id!r} failed: {type(exc).__name__}: {exc}") from exc
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{prefix}{repo_id}"
