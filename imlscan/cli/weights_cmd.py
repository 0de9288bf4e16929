"""``imlscan weights``: list, download, verify, inspect and convert weights files."""

from __future__ import annotations

from pathlib import Path

import typer

from imlscan.cli.app import app, err_console

weights_app = typer.Typer(
    help="Manage model weights.\n\nExample: imlscan weights convert ckpt.pth model.safetensors", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")


@weights_app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="The authors' checkpoint (.pth holding {'model': state_dict})."),
    dst: Path = typer.Argument(..., help="Output .safetensors file."),
    name: str = typer.Option(None, help="Name stored in the metadata (default: DST's stem)."),
) -> None:
    """Convert an official SparseViT checkpoint to an imlscan safetensors file.

    Example: imlscan weights convert sparsevit_catnet.pth sparsevit-b-official.safetensors
    """
    from imlscan.convert_checkpoint import convert_checkpoint_file

    sha = convert_checkpoint_file(src, dst, name=name)
    err_console.print(f"wrote {dst} (sha256 {sha})")
