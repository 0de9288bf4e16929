"""``imlscan models``: the architecture variants, with measured sizes."""

from __future__ import annotations

import typer

from imlscan.cli.app import app, err_console, stdout_json


@app.command("models")
def models(
    size: int = typer.Option(512, "--size", help="Input size at which MACs are counted."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON on stdout."),
) -> None:
    """List the SparseViT variants with parameter count and MACs (counted, not quoted).

    Example: imlscan models --json
    """
    from imlscan.models import count_macs, count_parameters, create_model, get_variant, list_models

    rows = []
    for name in list_models():
        m = create_model(name)
        cfg = m.cfg
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(m),
                "gmacs": round(count_macs(m, size) / 1e9, 2),
                "depths": list(cfg.depths),
                "dims": list(cfg.dims),
                "stage3_sparsity": [s for s, n in zip(cfg.stage3_sparsity, cfg.stage3_groups) for _ in range(n)],
                "stage4_sparsity": [s for s, n in zip(cfg.stage4_sparsity, cfg.stage4_groups) for _ in range(n)],
                "description": get_variant(name).description,
            }
        )
    if json_out:
        stdout_json({"size": size, "models": rows})
        return
    from rich.table import Table

    t = Table(title=f"SparseViT variants (MACs at {size}x{size})")
    for col in ("name", "params", "GMACs", "depths", "dims", "description"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"], f"{r['parameters']:,}", f"{r['gmacs']:.2f}", str(r["depths"]), str(r["dims"]), r["description"]
        )
    err_console.print(t)
