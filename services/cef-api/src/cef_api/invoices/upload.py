"""Streaming multipart reader for submissions: the header part in memory (small), the backing
data straight into an encrypted spool, so a large file is never held whole nor on disk in clear."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from cef_api.spool import EncryptedSpool, SpoolCipher
from cef_common.errors import AppError, Unprocessable

MAX_HEADER_PART_BYTES = 64 * 1024
INVOICE_PART = "invoice"
BACKING_PART = "backing_data"


class UploadError(Unprocessable):
    code = "submission-invalid"


@dataclass
class Upload:
    header: bytes
    spool: EncryptedSpool


@dataclass
class _Part:
    name: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def multipart_boundary(content_type: str | None) -> bytes:
    ctype, options = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(
            "send the invoice as multipart/form-data with a part 'invoice' (the JSON header) and a part "
            "'backing_data' (the CSV file)",
            code="submission-not-multipart",
        )
    return options[b"boundary"]


async def receive_upload(
    body: AsyncIterator[bytes], *, content_type: str | None, spool_dir: Path, cipher: SpoolCipher
) -> Upload:
    """Reads the request body; on any error the spool is deleted before the error leaves."""
    boundary = multipart_boundary(content_type)
    spool = EncryptedSpool(spool_dir, cipher)
    header = bytearray()
    seen: set[str] = set()
    current = _Part()
    field_name = bytearray()
    field_value = bytearray()
    error: AppError | None = None

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[field_name.decode("latin-1").lower()] = field_value.decode("latin-1")
        field_name.clear()
        field_value.clear()

    def on_headers_finished() -> None:
        nonlocal error
        _, options = parse_options_header(current.headers.get("content-disposition", ""))
        name = options.get(b"name")
        current.name = name.decode("utf-8", "replace") if name else None
        if current.name in seen and error is None:
            # Named only when it is one of ours: a part's name is the caller's text.
            what = f"the part {current.name!r}" if current.name in (INVOICE_PART, BACKING_PART) else "a part"
            error = UploadError(f"{what} is sent twice under one name; send it once")
        if current.name:
            seen.add(current.name)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal error
        if current.name == BACKING_PART:
            spool.write(data[start:end])
        elif current.name == INVOICE_PART:
            header.extend(data[start:end])
            if len(header) > MAX_HEADER_PART_BYTES and error is None:
                error = UploadError(
                    f"the 'invoice' part is over {MAX_HEADER_PART_BYTES} bytes; send only the header"
                )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    try:
        async for chunk in body:
            if chunk:
                parser.write(chunk)
            if error is not None:
                raise error
        parser.finalize()
        spool.finish()
        missing = [p for p in (INVOICE_PART, BACKING_PART) if p not in seen]
        if missing:
            raise UploadError(
                f"the submission has no part {' and no part '.join(repr(p) for p in missing)}; "
                "send 'invoice' (the JSON header) and 'backing_data' (the CSV file)",
                code="submission-part-missing",
            )
    except AppError:
        spool.delete()
        raise
    except MultipartParseError:
        spool.delete()
        raise UploadError(
            "the multipart body could not be read; check the boundary and part headers",
            code="submission-not-multipart",
        ) from None
    except BaseException:
        spool.delete()
        raise
    return Upload(header=bytes(header), spool=spool)
