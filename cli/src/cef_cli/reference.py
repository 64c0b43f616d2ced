"""`cef reference` commands: load a directory of reference files into the local CEF API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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
    from rich.progress import TaskID

app = group("Reference data: GP practices, patients, tariff and the rest.")


def _datasets() -> tuple[tuple[str, ...], dict[str, str]]:
    """The datasets in load order (practices and providers first, patient-keyed data last; the seed
    on start uses the same) and each one's file name."""
    from cef_api.reference.parsers import FILENAMES, LOAD_ORDER

    return LOAD_ORDER, dict(FILENAMES)


class _Rows:
    """Rows of a file read so far (its lines, less the header row: epraccur has none)."""

    def __init__(self, path: Path) -> None:
        self.lines = 0
        self.header = 0 if path.name == "epraccur.csv" else 1

    def read(self, lines: int) -> int:
        self.lines += lines
        return max(self.lines - self.header, 0)


def _blocks(
    path: Path, sent: Callable[[int, int], None], done: Callable[[], None], size: int = 1 << 20
) -> Iterator[bytes]:
    """The file in blocks, telling `sent` each block's bytes and lines as it goes, and `done` at the end."""
    with path.open("rb") as f:
        while block := f.read(size):
            yield block
            sent(len(block), block.count(b"\n"))
    done()


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
            TextColumn("[bold]{task.description:<26}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        files = progress.add_task("reference data", total=len(found), status=f"0/{len(found)} files")
        for n, (dataset, path) in enumerate(found, start=1):
            # Per file: the rows read as the file is sent, then the service's checking, tokenising and
            # storing (a bar without an end: it answers once the new version is in force).
            task = progress.add_task(f"  {path.name}", total=path.stat().st_size, status="0 rows read")
            rows = _Rows(path)

            def sent(size: int, lines: int, task: TaskID = task, rows: _Rows = rows) -> None:
                progress.update(task, advance=size, status=f"{rows.read(lines):,} rows read")

            def done(task: TaskID = task, rows: _Rows = rows) -> None:
                # The service now checks, tokenises and stores: a bar without an end until it answers.
                progress.update(task, total=None, status=f"{rows.read(0):,} rows read; checking and storing")

            started = time.perf_counter()
            try:
                response = client.put(
                    f"/v1/reference/{dataset}",
                    content=_blocks(path, sent, done),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
                )
            except httpx.HTTPError as exc:
                progress.stop()
                fail(
                    f"the CEF API at {url} did not answer ({type(exc).__name__}): is `cef up` running?",
                    code=UNREACHABLE,
                )
            seconds = time.perf_counter() - started
            progress.remove_task(task)
            if response.status_code == 200:
                body = response.json()
                # What the version changed, when a reload kept rows of the one before.
                changes = (
                    f"; {body['added']:,} added, {body['retired']:,} retired, {body['kept']:,} unchanged"
                    if body.get("kept")
                    else ""
                )
                progress.console.print(
                    f"[green]✓[/] {path.name}: {body['rows']:,} rows → {dataset} version {body['version']} "
                    f"({seconds:.1f} s{changes})"
                )
            else:
                failures += 1
                progress.console.print(f"[bold red]✗ {path.name}[/] ({dataset}) was not loaded:")
                for line in _problem_lines(response):
                    progress.console.print(f"    {line}", highlight=False, markup=False)
            progress.update(files, advance=1, status=f"{n}/{len(found)} files")
    if failures:
        fail(f"{failures} of {len(found)} file(s) were refused; correct them and load again")
    out.print(f"loaded {len(found)} reference file(s)")
