"""`cef reference` commands: load a directory of reference files into the local CEF API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cef_cli.common import (
    UNREACHABLE,
    DataDirOption,
    console,
    fail,
    group,
    local_token,
    out,
    problem_text,
    service_url,
)

if TYPE_CHECKING:
    import httpx

app = group("Reference data: GP practices, patients, tariff and the rest.")


def _datasets() -> tuple[tuple[str, ...], dict[str, str]]:
    """The datasets in load order (practices and providers first, patient-keyed data last; the seed
    on start uses the same) and each one's file name."""
    from cef_api.reference.parsers import FILENAMES, LOAD_ORDER

    return LOAD_ORDER, dict(FILENAMES)


def _problem_lines(response: httpx.Response) -> list[str]:
    return problem_text(response).splitlines()


@app.command("load")
def load(
    directory: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Directory of reference files.")
    ],
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Load every reference file found in DIRECTORY.

    Each goes through the local CEF API and replaces its dataset."""
    import httpx
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    load_order, names = _datasets()
    found = [(d, directory / names[d]) for d in load_order if (directory / names[d]).is_file()]
    if not found:
        fail(f"no reference files in {directory}: expected any of {', '.join(names[d] for d in load_order)}")
    token = local_token(data_dir, scope="reference:write", audience="cef-api", sub="cef-reference-load")
    failures = 0
    url = service_url("cef-api")
    with (
        httpx.Client(base_url=url, timeout=httpx.Timeout(600, connect=5)) as client,
        Progress(
            TextColumn("[bold]{task.description:<22}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} files"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("reference data", total=len(found))
        for dataset, path in found:
            progress.update(task, description=dataset)
            try:
                response = client.put(
                    f"/v1/reference/{dataset}",
                    content=path.read_bytes(),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
                )
            except httpx.HTTPError as exc:
                progress.stop()
                fail(
                    f"the CEF API at {url} did not answer ({type(exc).__name__}): is `cef up` running?",
                    code=UNREACHABLE,
                )
            if response.status_code == 200:
                body = response.json()
                progress.console.print(
                    f"[green]✓[/] {path.name}: {body['rows']} rows → {dataset} version {body['version']}"
                )
            else:
                failures += 1
                progress.console.print(f"[bold red]✗ {path.name}[/] ({dataset}) was not loaded:")
                for line in _problem_lines(response):
                    progress.console.print(f"    {line}", highlight=False, markup=False)
            progress.advance(task)
    if failures:
        fail(f"{failures} of {len(found)} file(s) were refused; correct them and load again")
    out.print(f"loaded {len(found)} reference file(s)")
